"""What a REST handler receives besides its request: the broker, the settings, limits.

:func:`create_app` stores the broker and the settings on ``app.state``; handlers
declare ``broker: BrokerDependency`` and ``settings: SettingsDependency`` and
never reach for globals. :func:`require_at_most` is how a handler enforces a
configured limit on a request value.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from relaymq.broker import Broker
from relaymq.config import Settings
from relaymq.errors import InvalidArgument


async def get_broker(request: Request) -> Broker:
    """The broker this app serves. (``async``: FastAPI runs a plain ``def``
    dependency in a worker thread, a hand-off per request for a field read.)"""
    return request.app.state.broker


async def get_settings(request: Request) -> Settings:
    """The server settings."""
    return request.app.state.settings


BrokerDependency = Annotated[Broker, Depends(get_broker)]
SettingsDependency = Annotated[Settings, Depends(get_settings)]

NamespacePath = Annotated[str, Path(max_length=256, description="Namespace name.")]
StreamPath = Annotated[str, Path(max_length=256, description="Stream name.")]
SubscriptionPath = Annotated[str, Path(max_length=256, description="Subscription name.")]
QueuePath = Annotated[str, Path(max_length=256, description="Queue name.")]
TopicPath = Annotated[str, Path(max_length=256, description="Topic name.")]


def require_at_most(field: str, value: int, limit_name: str, limit: int) -> None:
    """Raise :class:`InvalidArgument` when a request's ``field`` exceeds a setting."""
    if value > limit:
        raise InvalidArgument(
            f"{field} {value} exceeds {limit_name} ({limit})",
            field=field,
            value=value,
            limit=limit_name,
            maximum=limit,
        )
