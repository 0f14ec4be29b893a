"""A message received from a subscription, and how it is settled.

Owns :class:`Message`: the delivered message's fields plus ``ack``, ``nack``,
``term`` and ``extend``, which go back over the WebSocket connection that
delivered it. A message remembers the connection generation it came on: after
a reconnect the server has already handed it back for redelivery, so settling
it raises :class:`~relaymq.errors.StaleReceipt` at once instead of hanging.
"""

from __future__ import annotations

import time
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from relaymq import errors
from relaymq.client.models import StreamMessage

if TYPE_CHECKING:
    from relaymq.client.subscription import Subscription
    from relaymq.protocol.frames import DeliveredMessage


def now_ms() -> int:
    """Wall-clock time in ms since the epoch (lease deadlines use it)."""
    return int(time.time() * 1000)


def _delivered_field(name: str) -> property:
    """A field of the message as delivered, read from (and written to) the
    decoded :class:`~relaymq.protocol.frames.DeliveredMessage` itself: nothing is
    copied per message, and a field nobody reads costs nothing."""

    def write(message: Message, value: Any) -> None:
        setattr(message._delivered, name, value)

    return property(attrgetter(f"_delivered.{name}"), write, doc=f"The message's ``{name}``.")


class Message(StreamMessage):
    """A delivered message: its fields, and ``ack`` / ``nack`` / ``term`` / ``extend``.

    Settling is fire-and-forget by default: the SDK batches the receipts of
    many messages into one frame, and the server reports only failures (they
    are logged). Pass ``confirm=True`` to wait for the server's answer and get
    a :class:`~relaymq.errors.RelayError` if the receipt failed.

    In ``ordered`` subscriptions ``ack`` is cumulative: it commits the offset,
    acknowledging every earlier message of the partition with it.
    """

    __slots__ = ("_delivered", "_generation", "_subscription", "lease_ms", "settled")

    # The delivered message's own fields (StreamMessage's slots of these names stay empty).
    id = _delivered_field("id")
    subject = _delivered_field("subject")
    payload = _delivered_field("payload")
    key = _delivered_field("key")
    headers = _delivered_field("headers")
    timestamp_ms = _delivered_field("timestamp_ms")
    partition = _delivered_field("partition")
    offset = _delivered_field("offset")
    priority = _delivered_field("priority")
    expires_at_ms = _delivered_field("expires_at_ms")
    receipt = _delivered_field("receipt")
    delivery_count = _delivered_field("delivery_count")
    lease_deadline_ms = _delivered_field("lease_deadline_ms")

    def __init__(
        self,
        delivered: DeliveredMessage,
        subscription: Subscription,
        generation: int,
        received_ms: int | None = None,
    ) -> None:
        """Wrap a delivered message; ``received_ms`` (when it arrived) is read once per
        ``deliver`` frame by the caller rather than once per message."""
        self._delivered = delivered
        if received_ms is None:
            received_ms = now_ms()
        lease_ms = delivered.lease_deadline_ms - received_ms
        self.lease_ms = lease_ms if lease_ms > 0 else 0
        self.settled = False
        self._subscription = subscription
        self._generation = generation

    @property
    def subscription(self) -> str:
        """The name of the subscription that delivered the message."""
        return self._subscription.name

    @property
    def stale(self) -> bool:
        """Whether the connection that delivered the message is gone (it will be
        delivered again; settling it raises :class:`~relaymq.errors.StaleReceipt`)."""
        return self._generation != self._subscription.generation

    async def ack(self, *, confirm: bool = False) -> None:
        """Done: the message is never delivered again (``ordered``: commit up to it)."""
        await self._settle("ack", None, confirm)

    async def nack(
        self, delay_ms: int | None = None, *, error: str | None = None, confirm: bool = False
    ) -> None:
        """Deliver again after ``delay_ms`` (default: the subscription's backoff).
        ``error`` is kept as the message's last error (shown once dead-lettered)."""
        await self._settle("nack", (delay_ms, error), confirm)

    async def term(self, reason: str | None = None, *, confirm: bool = False) -> None:
        """Never deliver again: dead-letter the message now (if the subscription has
        a dead-letter stream)."""
        await self._settle("term", reason, confirm)

    async def extend(self, extend_ms: int | None = None, *, confirm: bool = False) -> None:
        """Keep working: push the lease out by ``extend_ms`` (default: the ack timeout)."""
        self._check_open()
        if confirm:
            deadline_ms = await self._subscription.settle_confirmed("extend", self, extend_ms)
            if deadline_ms is not None:
                self.lease_deadline_ms = deadline_ms
        else:
            self._subscription.settle_later("extend", self, extend_ms)
            self.lease_deadline_ms = now_ms() + (extend_ms or self.lease_ms)

    async def _settle(self, op: str, option: object, confirm: bool) -> None:
        self._check_open()
        self.settled = True
        if confirm:
            await self._subscription.settle_confirmed(op, self, option)
        else:
            self._subscription.settle_later(op, self, option)

    def _check_open(self) -> None:
        """Refuse a settled message, or one whose connection is gone."""
        if self.settled:
            raise errors.InvalidArgument(
                f"message {self.id!r} was already acked, nacked or termed", receipt=self.receipt
            )
        if self.stale:
            raise errors.StaleReceipt(
                f"message {self.id!r} came on a connection that was lost; "
                "the server delivers it again",
                receipt=self.receipt,
            )

    def to_dict(self) -> dict[str, Any]:
        """The message as JSON-able values, with its delivery facts."""
        return {
            **super().to_dict(),
            "subscription": self.subscription,
            "delivery_count": self.delivery_count,
            "receipt": self.receipt,
        }

    def __repr__(self) -> str:
        return (
            f"Message(id={self.id!r}, subject={self.subject!r}, partition={self.partition}, "
            f"offset={self.offset}, delivery_count={self.delivery_count}, "
            f"payload={self.payload[:40]!r})"
        )
