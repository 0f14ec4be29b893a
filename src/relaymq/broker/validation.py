"""Checks of stream and subscription configurations before the broker applies them."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from relaymq.broker.models import (
    Backoff,
    StartKind,
    StreamConfig,
    SubscriptionConfig,
)
from relaymq.broker.names import validate_name
from relaymq.broker.settings import BrokerSettings
from relaymq.broker.stream import compile_schema
from relaymq.core.subjects import validate_filter
from relaymq.errors import InvalidConfig

Config = TypeVar("Config", StreamConfig, SubscriptionConfig)

MAX_SUBJECTS_PER_STREAM = 100
MAX_ACK_TIMEOUT_MS = 12 * 60 * 60 * 1000
MAX_DEDUP_WINDOW_MS = 7 * 24 * 60 * 60 * 1000
MAX_BACKOFF_MS = 24 * 60 * 60 * 1000


def normalized(config: Config) -> Config:
    """``config`` rebuilt through msgspec so every field has its declared type (a plain
    ``"new"`` becomes ``DiscardPolicy.NEW``); a wrong type is :class:`InvalidConfig`."""
    try:
        return msgspec.convert(msgspec.to_builtins(config), type(config))
    except (msgspec.ValidationError, TypeError) as error:
        raise InvalidConfig(str(error)) from None


def _positive_or_none(field: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise InvalidConfig(f"{field} must be positive", field=field, value=value)


def _within(field: str, value: float, lowest: float, highest: float) -> None:
    if not lowest <= value <= highest:
        raise InvalidConfig(
            f"{field} must be between {lowest} and {highest}", field=field, value=value
        )


def validate_stream_config(config: StreamConfig, settings: BrokerSettings) -> StreamConfig:
    """``config`` normalized, or :class:`InvalidConfig` (or a more specific error) if it
    cannot be applied."""
    config = normalized(config)
    validate_name("stream", config.name)
    _within("partitions", config.partitions, 1, settings.max_partitions)
    validate_stream_limits(config, settings)
    return config


def validate_stream_limits(config: StreamConfig, settings: BrokerSettings) -> None:
    """The checks that also apply when a stream is updated."""
    if not config.subjects:
        raise InvalidConfig("a stream needs at least one subject", field="subjects")
    if len(config.subjects) > MAX_SUBJECTS_PER_STREAM:
        raise InvalidConfig(
            f"a stream takes at most {MAX_SUBJECTS_PER_STREAM} subjects", field="subjects"
        )
    for subject in config.subjects:
        validate_filter(subject)
    _positive_or_none("max_age_ms", config.max_age_ms)
    _positive_or_none("max_bytes", config.max_bytes)
    _positive_or_none("max_messages", config.max_messages)
    _positive_or_none("max_message_bytes", config.max_message_bytes)
    _within("dedup_window_ms", config.dedup_window_ms, 0, MAX_DEDUP_WINDOW_MS)
    compile_schema(config.json_schema)


def validate_backoff(backoff: Backoff) -> None:
    """Raise :class:`InvalidConfig` for a backoff that makes no sense."""
    _within("backoff.initial_ms", backoff.initial_ms, 0, MAX_BACKOFF_MS)
    _within("backoff.max_ms", backoff.max_ms, backoff.initial_ms, MAX_BACKOFF_MS)
    _within("backoff.multiplier", backoff.multiplier, 1.0, 100.0)
    _within("backoff.jitter", backoff.jitter, 0.0, 1.0)


def validate_subscription_config(config: SubscriptionConfig) -> SubscriptionConfig:
    """``config`` normalized, or :class:`InvalidConfig` (or a more specific error) if it
    cannot be applied."""
    config = normalized(config)
    validate_name("subscription", config.name)
    validate_name("stream", config.stream)
    validate_filter(config.filter_subject)
    validate_subscription_limits(config)
    start = config.start
    if start.kind in (StartKind.OFFSET, StartKind.TIMESTAMP) and (
        start.value is None or start.value < 0
    ):
        raise InvalidConfig(f"start {start.kind} needs a non-negative value", field="start.value")
    return config


def validate_subscription_limits(config: SubscriptionConfig) -> None:
    """The checks that also apply when a subscription is updated."""
    _within("ack_timeout_ms", config.ack_timeout_ms, 1, MAX_ACK_TIMEOUT_MS)
    _within("max_deliveries", config.max_deliveries, 0, 1_000_000)
    validate_backoff(config.backoff)
    if config.dead_letter_stream is not None:
        validate_name("stream", config.dead_letter_stream)
        if config.dead_letter_stream == config.stream:
            raise InvalidConfig(
                "a subscription cannot dead-letter into its own stream",
                field="dead_letter_stream",
            )
