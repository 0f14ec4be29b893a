"""How a dead letter looks: the original message plus headers saying where it came from.

The dead letter keeps the original subject, key, payload and headers so that a
redrive can publish it back unchanged; the ``relaymq-*`` headers below are
added (and stripped again on redrive).
"""

from __future__ import annotations

from relaymq.core.cursor import DeadLetter
from relaymq.core.message import Message

ORIGIN_STREAM = "relaymq-origin-stream"
ORIGIN_SUBSCRIPTION = "relaymq-origin-subscription"
ORIGIN_SUBJECT = "relaymq-origin-subject"
ORIGIN_PARTITION = "relaymq-origin-partition"
ORIGIN_OFFSET = "relaymq-origin-offset"
DELIVERY_COUNT = "relaymq-delivery-count"
REASON = "relaymq-dead-letter-reason"
LAST_ERROR = "relaymq-last-error"

DEAD_LETTER_HEADERS = (
    ORIGIN_STREAM,
    ORIGIN_SUBSCRIPTION,
    ORIGIN_SUBJECT,
    ORIGIN_PARTITION,
    ORIGIN_OFFSET,
    DELIVERY_COUNT,
    REASON,
    LAST_ERROR,
)


def dead_letter_message(dead_letter: DeadLetter, stream: str, subscription: str) -> Message:
    """The message to append to the dead-letter stream for ``dead_letter``."""
    original = dead_letter.message
    headers = dict(original.headers)
    headers.update(
        {
            ORIGIN_STREAM: stream,
            ORIGIN_SUBSCRIPTION: subscription,
            ORIGIN_SUBJECT: original.subject,
            ORIGIN_PARTITION: str(original.partition),
            ORIGIN_OFFSET: str(original.offset),
            DELIVERY_COUNT: str(dead_letter.delivery_count),
            REASON: dead_letter.reason,
        }
    )
    if dead_letter.last_error:
        headers[LAST_ERROR] = dead_letter.last_error[:1024]
    return Message(
        subject=original.subject,
        payload=original.payload,
        key=original.key,
        headers=headers,
        priority=original.priority,
    )


def redriven_message(dead: Message) -> Message:
    """The message to publish back to the origin stream for a dead letter."""
    headers = {
        name: value for name, value in dead.headers.items() if name not in DEAD_LETTER_HEADERS
    }
    return Message(
        subject=dead.headers.get(ORIGIN_SUBJECT, dead.subject),
        payload=dead.payload,
        key=dead.key,
        headers=headers,
        priority=dead.priority,
    )
