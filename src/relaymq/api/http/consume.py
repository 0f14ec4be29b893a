"""REST resource: consuming a subscription by pull.

``fetch`` (with long-poll), then per-receipt ``ack``, ``nack``, ``extend`` and
``term``, and ``seek`` for ordered subscriptions. The functions
:func:`fetch_messages` and :func:`settle` are shared with the queue shortcuts
in :mod:`relaymq.api.http.queues`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request, Response

from relaymq.api.http.dependencies import (
    BrokerDependency,
    NamespacePath,
    SettingsDependency,
    SubscriptionPath,
    require_at_most,
)
from relaymq.api.http.draining import unless_draining
from relaymq.api.http.routing import resource_router
from relaymq.api.http.schemas import (
    ExtendRequest,
    FetchRequest,
    MessageOut,
    MessagesOut,
    NackRequest,
    ReceiptError,
    ReceiptResult,
    ReceiptResults,
    ReceiptsRequest,
    SeekRequest,
    TermRequest,
)
from relaymq.broker import Broker
from relaymq.config import Settings
from relaymq.errors import RelayError

router = resource_router("consume")

SUBSCRIPTION = "/namespaces/{namespace}/subscriptions/{subscription}"
DEFAULT_CONSUMER_ID = "http"

Outcome = RelayError | int | None


async def fetch_messages(
    request: Request,
    broker: Broker,
    settings: Settings,
    namespace: str,
    subscription: str,
    body: FetchRequest,
) -> MessagesOut:
    """Lease up to ``max_messages`` messages, long-polling up to ``wait_ms``."""
    require_at_most(
        "max_messages", body.max_messages, "max_fetch_messages", settings.max_fetch_messages
    )
    require_at_most("wait_ms", body.wait_ms, "max_wait_ms", settings.max_wait_ms)
    long_poll = broker.fetch(
        namespace,
        subscription,
        consumer_id=body.consumer_id or DEFAULT_CONSUMER_ID,
        max_messages=body.max_messages,
        wait_ms=body.wait_ms,
    )
    received = await unless_draining(request, body.wait_ms, long_poll)
    return MessagesOut(messages=[MessageOut.from_received(item) for item in received])


def receipt_results(receipts: Sequence[str], outcomes: Sequence[Outcome]) -> ReceiptResults:
    """Pair each receipt with its outcome: ``None`` or a deadline is ok, an error is not."""
    results = []
    for receipt, outcome in zip(receipts, outcomes, strict=True):
        if isinstance(outcome, RelayError):
            error = ReceiptError(code=outcome.code, message=outcome.message)
            results.append(ReceiptResult(receipt=receipt, ok=False, error=error))
        else:
            results.append(ReceiptResult(receipt=receipt, ok=True, deadline_ms=outcome))
    return ReceiptResults(results=results)


async def settle(
    broker: Broker, namespace: str, subscription: str, body: ReceiptsRequest
) -> ReceiptResults:
    """Apply an ack, nack, extend or term request (by its type) to its receipts."""
    receipts = body.receipts
    if isinstance(body, NackRequest):
        outcomes: Sequence[Outcome] = await broker.nack(
            namespace, subscription, receipts, delay_ms=body.delay_ms, error=body.error
        )
    elif isinstance(body, ExtendRequest):
        outcomes = await broker.extend(namespace, subscription, receipts, extend_ms=body.extend_ms)
    elif isinstance(body, TermRequest):
        outcomes = await broker.term(namespace, subscription, receipts, reason=body.reason)
    else:
        outcomes = await broker.ack(namespace, subscription, receipts)
    return receipt_results(receipts, outcomes)


@router.post(SUBSCRIPTION + "/fetch", summary="Fetch messages", response_model=MessagesOut)
async def fetch(
    request: Request,
    namespace: NamespacePath,
    subscription: SubscriptionPath,
    body: FetchRequest,
    broker: BrokerDependency,
    settings: SettingsDependency,
) -> MessagesOut:
    """Lease messages; each comes with a receipt to ack, nack, extend or term it.
    With ``wait_ms`` the request waits until a message arrives (long-poll)."""
    return await fetch_messages(request, broker, settings, namespace, subscription, body)


@router.post(SUBSCRIPTION + "/ack", summary="Acknowledge messages", response_model=ReceiptResults)
async def ack(
    namespace: NamespacePath,
    subscription: SubscriptionPath,
    body: ReceiptsRequest,
    broker: BrokerDependency,
) -> ReceiptResults:
    """Mark messages done. A receipt whose lease expired and whose message was
    delivered again since is refused with ``stale_receipt``."""
    return await settle(broker, namespace, subscription, body)


@router.post(SUBSCRIPTION + "/nack", summary="Reject messages", response_model=ReceiptResults)
async def nack(
    namespace: NamespacePath,
    subscription: SubscriptionPath,
    body: NackRequest,
    broker: BrokerDependency,
) -> ReceiptResults:
    """Give messages back for redelivery after ``delay_ms`` (default: the backoff)."""
    return await settle(broker, namespace, subscription, body)


@router.post(SUBSCRIPTION + "/extend", summary="Extend leases", response_model=ReceiptResults)
async def extend(
    namespace: NamespacePath,
    subscription: SubscriptionPath,
    body: ExtendRequest,
    broker: BrokerDependency,
) -> ReceiptResults:
    """Keep working on messages longer; each result carries its new ``deadline_ms``."""
    return await settle(broker, namespace, subscription, body)


@router.post(SUBSCRIPTION + "/term", summary="Terminate messages", response_model=ReceiptResults)
async def term(
    namespace: NamespacePath,
    subscription: SubscriptionPath,
    body: TermRequest,
    broker: BrokerDependency,
) -> ReceiptResults:
    """Never deliver these messages again; they go to the dead-letter stream if any."""
    return await settle(broker, namespace, subscription, body)


@router.post(
    SUBSCRIPTION + "/seek",
    status_code=204,
    summary="Seek an ordered subscription",
    response_class=Response,
)
async def seek(
    namespace: NamespacePath,
    subscription: SubscriptionPath,
    body: SeekRequest,
    broker: BrokerDependency,
) -> Response:
    """Move an ``ordered`` subscription to an offset or a time (replay or skip)."""
    await broker.seek(
        namespace,
        subscription,
        offset=body.offset,
        timestamp_ms=body.timestamp_ms,
        partition=body.partition,
    )
    return Response(status_code=204)
