"""REST resource: health probes for orchestrators (``/healthz``, ``/readyz``).

``/healthz`` answers 200 while the process serves HTTP at all; ``/readyz``
answers 200 only while the broker's store is open and writable, else 503.
"""

from __future__ import annotations

from fastapi import APIRouter

from relaymq.api.http.dependencies import BrokerDependency
from relaymq.api.http.errors import error_responses
from relaymq.api.http.schemas import HealthOut, ReadyOut
from relaymq.errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness probe", response_model=HealthOut)
async def healthz() -> HealthOut:
    """The process is alive."""
    return HealthOut()


@router.get(
    "/readyz", summary="Readiness probe", response_model=ReadyOut, responses=error_responses(503)
)
async def readyz(broker: BrokerDependency) -> ReadyOut:
    """The broker can serve requests (503 ``unavailable`` while it cannot)."""
    if not broker.ready():
        raise Unavailable("broker is not ready")
    return ReadyOut(ready=True)
