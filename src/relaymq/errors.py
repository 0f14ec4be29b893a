"""The one error tree of RelayMQ.

Every failure a caller can see is a subclass of :class:`RelayError` with a
stable, documented ``code``. Codes never change once released; adapters map
them to their protocol once (HTTP status, WebSocket error frame, ...) by
walking the class hierarchy, so a new subclass inherits its parent's mapping.
"""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Root of every RelayMQ error. ``code`` is stable; ``details`` is JSON-able."""

    code = "error"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The error as the protocol-neutral body ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": self.message, "details": self.details}


# -- the caller sent something wrong -------------------------------------------------


class InvalidArgument(RelayError):
    """A request was malformed or named an impossible value."""

    code = "invalid_argument"


class InvalidName(InvalidArgument):
    """A namespace, stream or subscription name breaks the naming rules."""

    code = "invalid_name"


class InvalidSubject(InvalidArgument):
    """A subject or subject filter breaks the subject grammar."""

    code = "invalid_subject"


class InvalidReceipt(InvalidArgument):
    """A receipt string could not be parsed."""

    code = "invalid_receipt"


class InvalidConfig(InvalidArgument):
    """A stream or subscription configuration is inconsistent."""

    code = "invalid_config"


class WrongDeliveryMode(InvalidArgument):
    """The operation does not exist for the subscription's delivery mode."""

    code = "wrong_delivery_mode"


class SchemaViolation(RelayError):
    """A payload did not validate against the stream's JSON Schema."""

    code = "schema_violation"


# -- the thing named does not exist ---------------------------------------------------


class NotFound(RelayError):
    """A named resource does not exist (or is not visible to the caller)."""

    code = "not_found"


class NamespaceNotFound(NotFound):
    code = "namespace_not_found"


class StreamNotFound(NotFound):
    code = "stream_not_found"


class SubscriptionNotFound(NotFound):
    code = "subscription_not_found"


class NoStreamForSubject(NotFound):
    """No stream captures the subject a message was published to."""

    code = "no_stream_for_subject"


class ReceiptNotFound(NotFound):
    """The receipt names no message in flight (already acked, or never delivered)."""

    code = "receipt_not_found"


class PartitionNotFound(NotFound):
    code = "partition_not_found"


# -- the request conflicts with current state -----------------------------------------


class Conflict(RelayError):
    """The request conflicts with the current state of a resource."""

    code = "conflict"


class AlreadyExists(Conflict):
    code = "already_exists"


class NamespaceExists(AlreadyExists):
    code = "namespace_exists"


class StreamExists(AlreadyExists):
    code = "stream_exists"


class SubscriptionExists(AlreadyExists):
    code = "subscription_exists"


class SubjectOverlap(Conflict):
    """Two streams would capture the same subject."""

    code = "subject_overlap"


class NamespaceNotEmpty(Conflict):
    code = "namespace_not_empty"


class StaleReceipt(Conflict):
    """The receipt's lease expired and the message was delivered again since.

    Ack fencing: an ack or nack carrying a stale receipt is never applied to the
    newer delivery of the same message.
    """

    code = "stale_receipt"


class OffsetOutOfRange(Conflict):
    """An offset lies before the first retained or after the last offset."""

    code = "offset_out_of_range"


# -- a limit was reached ----------------------------------------------------------------


class LimitExceeded(RelayError):
    """A configured limit was reached; ``details`` names the limit and its value."""

    code = "limit_exceeded"


class PayloadTooLarge(LimitExceeded):
    code = "payload_too_large"


class BatchTooLarge(LimitExceeded):
    code = "batch_too_large"


class HeadersTooLarge(LimitExceeded):
    code = "headers_too_large"


class TooManyResources(LimitExceeded):
    """A count limit (streams, subscriptions, partitions, consumers) was reached."""

    code = "too_many_resources"


class TooManyConnections(LimitExceeded):
    code = "too_many_connections"


class RateLimited(LimitExceeded):
    """A rate limit or quota was exceeded; ``details["retry_after_seconds"]`` says when to retry."""

    code = "rate_limited"


class StorageFull(LimitExceeded):
    """The disk, or a stream's ``max_bytes`` under the ``reject`` discard policy, is full."""

    code = "storage_full"


# -- who is calling -------------------------------------------------------------------


class Unauthenticated(RelayError):
    code = "unauthenticated"


class PermissionDenied(RelayError):
    code = "permission_denied"


# -- the server cannot serve right now ------------------------------------------------


class Unavailable(RelayError):
    """The broker or store cannot serve the request now; retrying later may work."""

    code = "unavailable"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class StoreClosed(Unavailable):
    code = "store_closed"


# -- the store found damage -------------------------------------------------------------


class CorruptRecord(RelayError):
    """A stored record failed its CRC or framing check (recovery handles these)."""

    code = "corrupt_record"


# -- the store failed ------------------------------------------------------------------


class StorageFailed(RelayError):
    """The store failed to make records durable after they were delivered
    (``early_delivery``): their partition takes no appends until the server
    restarts, so retrying does not help."""

    code = "storage_failed"


# -- client-side (raised by the Python SDK, relaymq.client) ------------------------------


class ConnectionLost(Unavailable):
    """The SDK lost its connection to the server and could not get it back within
    its reconnect policy (or the client was closed while a call waited)."""

    code = "connection_lost"


class RequestTimeout(Unavailable):
    """The server did not answer an SDK request in time."""

    code = "request_timeout"


# -- security and tenancy (appended) ----------------------------------------------------


class QuotaExceeded(RateLimited):
    """A namespace quota (streams, stored bytes, connections) is used up;
    ``details`` names the quota, its value and ``retry_after_seconds``."""

    code = "quota_exceeded"


class KeyNotFound(NotFound):
    """No API key with that id (or not one the caller may see)."""

    code = "key_not_found"
