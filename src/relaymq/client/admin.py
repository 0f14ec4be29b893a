"""Admin over the REST API: namespaces, streams, subscriptions, queues, topics.

Owns one class per resource (``client.streams``, ``client.subscriptions``,
``client.queues``, ``client.topics``, ``client.namespaces``), each with the
verbs the REST API has for it (``create``, ``list``, ``get``, ``update``,
``delete``, ``purge``, and the resource's own: ``read``/``replay`` of a
stream, ``seek``, ``dead_letters``, ``redrive``). Values come back typed
(:mod:`relaymq.client.models`); failures as the tree's errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec

from relaymq import errors
from relaymq.client.http import HttpTransport, segment
from relaymq.client.models import (
    NamespaceInfo,
    QueueInfo,
    StreamInfo,
    StreamMessage,
    SubscriptionInfo,
    TopicInfo,
)

Info = TypeVar("Info")
PAGE_SIZE = 100
REPLAY_WAIT_MS = 1_000


def settings(**fields: Any) -> dict[str, Any]:
    """A request body of the fields given (``None`` means: the server's default)."""
    return {name: value for name, value in fields.items() if value is not None}


def start_position(
    start: str | None, start_offset: int | None, start_timestamp_ms: int | None
) -> dict[str, Any] | None:
    """The ``start`` of a new subscription: earliest, latest, an offset or a time."""
    if start_offset is not None:
        return {"kind": "offset", "value": start_offset}
    if start_timestamp_ms is not None:
        return {"kind": "timestamp", "value": start_timestamp_ms}
    return {"kind": start} if start is not None else None


class Resource:
    """Requests under ``/v1/namespaces/{namespace}/{collection}``."""

    collection = ""

    def __init__(self, http: HttpTransport, namespace: str) -> None:
        self.http = http
        self.namespace = namespace

    def path(self, name: str | None = None, *rest: str) -> str:
        """The URL path of the collection, or of one member and a sub-path."""
        path = f"/v1/namespaces/{segment(self.namespace)}/{self.collection}"
        if name is not None:
            path += "/" + segment(name)
        return path + "".join("/" + part for part in rest)

    async def _create(self, kind: type[Info], body: dict[str, Any], exist_ok: bool) -> Info:
        try:
            return msgspec.convert(await self.http.request("POST", self.path(), json=body), kind)
        except errors.AlreadyExists:
            if not exist_ok:
                raise
            return msgspec.convert(await self.http.request("GET", self.path(body["name"])), kind)

    async def _list(self, kind: type[Info], **params: Any) -> list[Info]:
        """Every member, following the pages."""
        items: list[Info] = []
        cursor = None
        while True:
            page = await self.http.request(
                "GET", self.path(), params={"limit": PAGE_SIZE, "cursor": cursor, **params}
            )
            items.extend(msgspec.convert(page["items"], list[kind]))  # type: ignore[valid-type]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def _get(self, kind: type[Info], name: str) -> Info:
        return msgspec.convert(await self.http.request("GET", self.path(name)), kind)

    async def delete(self, name: str) -> None:
        """Delete it (and everything it owns)."""
        await self.http.request("DELETE", self.path(name))

    async def purge(self, name: str) -> None:
        """Drop its messages (stream, queue) or skip them (subscription)."""
        await self.http.request("POST", self.path(name, "purge"))


class Streams(Resource):
    """Streams: append-only logs capturing subjects, split into partitions."""

    collection = "streams"

    async def create(
        self,
        name: str,
        *,
        subjects: list[str] | None = None,
        partitions: int | None = None,
        retention: str | None = None,
        max_age_ms: int | None = None,
        max_bytes: int | None = None,
        max_messages: int | None = None,
        discard: str | None = None,
        max_message_bytes: int | None = None,
        dedup_window_ms: int | None = None,
        storage: str | None = None,
        json_schema: dict[str, Any] | None = None,
        description: str | None = None,
        exist_ok: bool = False,
    ) -> StreamInfo:
        """Create a stream capturing ``subjects`` (default: its name). ``retention``:
        ``limits``, ``interest`` or ``work_queue``. With ``exist_ok`` an existing
        stream of that name is returned instead of raising ``StreamExists``."""
        body = settings(
            name=name,
            subjects=subjects,
            partitions=partitions,
            retention=retention,
            max_age_ms=max_age_ms,
            max_bytes=max_bytes,
            max_messages=max_messages,
            discard=discard,
            max_message_bytes=max_message_bytes,
            dedup_window_ms=dedup_window_ms,
            storage=storage,
            json_schema=json_schema,
            description=description,
        )
        return await self._create(StreamInfo, body, exist_ok)

    async def list(self) -> list[StreamInfo]:
        """Every stream of the namespace, by name."""
        return await self._list(StreamInfo)

    async def get(self, name: str) -> StreamInfo:
        """A stream's settings, partitions and totals."""
        return await self._get(StreamInfo, name)

    async def update(self, name: str, **changes: Any) -> StreamInfo:
        """Change settings (``subjects``, ``max_age_ms``, ``max_bytes``, ...)."""
        body = await self.http.request("PATCH", self.path(name), json=changes)
        return msgspec.convert(body, StreamInfo)

    async def read(
        self,
        name: str,
        *,
        partition: int = 0,
        from_offset: int | None = None,
        from_timestamp_ms: int | None = None,
        limit: int = 100,
        wait_ms: int = 0,
    ) -> tuple[list[StreamMessage], int | None]:
        """One page of a partition from an offset or a time: the messages and the
        offset to continue from. ``wait_ms`` long-polls for new messages."""
        params = {
            "partition": partition,
            "from_offset": from_offset,
            "from_timestamp_ms": from_timestamp_ms,
            "limit": limit,
            "wait_ms": wait_ms or None,
        }
        timeout_seconds = 30 + wait_ms / 1000
        body = await self.http.request(
            "GET", self.path(name, "messages"), params=params, timeout_seconds=timeout_seconds
        )
        messages = [StreamMessage.from_json(item) for item in body["messages"]]
        return messages, body.get("next_offset")

    async def replay(
        self,
        name: str,
        *,
        partition: int | None = None,
        from_offset: int | None = None,
        from_timestamp_ms: int | None = None,
        batch_messages: int = 100,
        follow: bool = False,
    ) -> AsyncIterator[StreamMessage]:
        """Every message of a stream from an offset or a time, in order per partition.

        ``partition=None`` replays each partition in turn. With ``follow`` the
        iteration never ends: it waits for new messages (one partition only)."""
        if follow and partition is None:
            raise errors.InvalidArgument("follow needs a partition")
        if partition is None:
            info = await self.get(name)
            partitions = [item.partition for item in info.partitions]
        else:
            partitions = [partition]
        for number in partitions:
            async for message in self._replay_partition(
                name, number, from_offset, from_timestamp_ms, batch_messages, follow
            ):
                yield message

    async def _replay_partition(
        self,
        name: str,
        partition: int,
        offset: int | None,
        timestamp_ms: int | None,
        batch_messages: int,
        follow: bool,
    ) -> AsyncIterator[StreamMessage]:
        while True:
            messages, next_offset = await self.read(
                name,
                partition=partition,
                from_offset=offset,
                from_timestamp_ms=timestamp_ms if offset is None else None,
                limit=batch_messages,
                wait_ms=REPLAY_WAIT_MS if follow else 0,
            )
            for message in messages:
                yield message
            if messages:
                offset = next_offset
            elif not follow:
                return


class DeadLetterResource(Resource):
    """A resource whose failed messages go to a dead-letter stream: browse and redrive them."""

    async def dead_letters(
        self, name: str, *, partition: int = 0, from_offset: int | None = None, limit: int = 100
    ) -> list[StreamMessage]:
        """Messages of the dead-letter stream, oldest first (headers
        ``relaymq-dead-letter-reason``, ``relaymq-last-error``, ...)."""
        params = {"partition": partition, "from_offset": from_offset, "limit": limit}
        body = await self.http.request("GET", self.path(name, "dead-letters"), params=params)
        return [StreamMessage.from_json(item) for item in body["messages"]]

    async def redrive(self, name: str, *, max_messages: int | None = None) -> int:
        """Publish dead letters back to their stream for another try; return how many."""
        body = await self.http.request(
            "POST",
            self.path(name, "dead-letters", "redrive"),
            json=settings(max_messages=max_messages),
        )
        return int(body["redriven"])


class Subscriptions(DeadLetterResource):
    """Subscriptions: durable cursors on a stream, with a delivery mode."""

    collection = "subscriptions"

    async def create(
        self,
        name: str,
        stream: str,
        *,
        mode: str | None = None,
        filter_subject: str | None = None,
        start: str | None = None,
        start_offset: int | None = None,
        start_timestamp_ms: int | None = None,
        ack_timeout_ms: int | None = None,
        max_deliveries: int | None = None,
        backoff: dict[str, float] | None = None,
        dead_letter_stream: str | None = None,
        description: str | None = None,
        early_delivery: bool | None = None,
        exist_ok: bool = False,
    ) -> SubscriptionInfo:
        """Create a subscription on ``stream``. ``mode``: ``shared`` (default),
        ``key_ordered`` or ``ordered``. ``start``: ``earliest`` (default) or
        ``latest``, or give ``start_offset`` / ``start_timestamp_ms``. ``backoff``:
        ``{"initial_ms", "max_ms", "multiplier", "jitter"}`` for nacks.
        ``early_delivery``: deliver messages once written, before the fsync that
        confirms them (a crash of the machine may take back one never confirmed)."""
        body = settings(
            name=name,
            stream=stream,
            mode=mode,
            filter_subject=filter_subject,
            start=start_position(start, start_offset, start_timestamp_ms),
            ack_timeout_ms=ack_timeout_ms,
            max_deliveries=max_deliveries,
            backoff=backoff,
            dead_letter_stream=dead_letter_stream,
            description=description,
            early_delivery=early_delivery,
        )
        return await self._create(SubscriptionInfo, body, exist_ok)

    async def list(self, stream: str | None = None) -> list[SubscriptionInfo]:
        """Every subscription of the namespace (or of one stream), by name."""
        return await self._list(SubscriptionInfo, stream=stream)

    async def get(self, name: str) -> SubscriptionInfo:
        """A subscription's settings and counters."""
        return await self._get(SubscriptionInfo, name)

    async def update(self, name: str, **changes: Any) -> SubscriptionInfo:
        """Change settings (``ack_timeout_ms``, ``max_deliveries``, ``backoff``, ...)."""
        body = await self.http.request("PATCH", self.path(name), json=changes)
        return msgspec.convert(body, SubscriptionInfo)

    async def seek(
        self,
        name: str,
        *,
        offset: int | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Move an ``ordered`` subscription to an offset or a time (replay or skip),
        on one partition or all."""
        body = settings(offset=offset, timestamp_ms=timestamp_ms, partition=partition)
        await self.http.request("POST", self.path(name, "seek"), json=body)


class Queues(DeadLetterResource):
    """Queues: a work-queue stream with one shared subscription, both named after it."""

    collection = "queues"

    async def create(
        self,
        name: str,
        *,
        partitions: int | None = None,
        mode: str | None = None,
        ack_timeout_ms: int | None = None,
        max_deliveries: int | None = None,
        backoff: dict[str, float] | None = None,
        dead_letter: bool | None = None,
        max_age_ms: int | None = None,
        max_bytes: int | None = None,
        max_messages: int | None = None,
        early_delivery: bool | None = None,
        exist_ok: bool = False,
    ) -> QueueInfo:
        """Create a queue (subject and subscription ``name``); with ``dead_letter``
        (default) failures go to the queue ``name-dlq``. ``early_delivery``: as in
        :meth:`Subscriptions.create`."""
        body = settings(
            name=name,
            partitions=partitions,
            mode=mode,
            ack_timeout_ms=ack_timeout_ms,
            max_deliveries=max_deliveries,
            backoff=backoff,
            dead_letter=dead_letter,
            max_age_ms=max_age_ms,
            max_bytes=max_bytes,
            max_messages=max_messages,
            early_delivery=early_delivery,
        )
        return await self._create(QueueInfo, body, exist_ok)

    async def list(self) -> list[QueueInfo]:
        """Every queue of the namespace, by name."""
        return await self._list(QueueInfo)

    async def get(self, name: str) -> QueueInfo:
        """A queue's settings and counters."""
        return await self._get(QueueInfo, name)


class Topics(Resource):
    """Topics: a stream capturing ``name`` and ``name.>``; one subscription per subscriber."""

    collection = "topics"

    async def create(
        self,
        name: str,
        *,
        partitions: int | None = None,
        max_age_ms: int | None = None,
        max_bytes: int | None = None,
        max_messages: int | None = None,
        exist_ok: bool = False,
    ) -> TopicInfo:
        """Create a topic."""
        body = settings(
            name=name,
            partitions=partitions,
            max_age_ms=max_age_ms,
            max_bytes=max_bytes,
            max_messages=max_messages,
        )
        return await self._create(TopicInfo, body, exist_ok)

    async def list(self) -> list[TopicInfo]:
        """Every topic of the namespace, by name."""
        return await self._list(TopicInfo)

    async def get(self, name: str) -> TopicInfo:
        """A topic and its subscriptions."""
        return await self._get(TopicInfo, name)

    async def subscribe(
        self, topic: str, name: str, *, exist_ok: bool = False, **options: Any
    ) -> SubscriptionInfo:
        """Create the subscription ``name`` on the topic (options as for
        :meth:`Subscriptions.create`: ``mode``, ``filter_subject``, ...)."""
        start = start_position(
            options.pop("start", None),
            options.pop("start_offset", None),
            options.pop("start_timestamp_ms", None),
        )
        body = {"name": name, **settings(start=start, **options)}
        try:
            created = await self.http.request("POST", self.path(topic, "subscriptions"), json=body)
        except errors.AlreadyExists:
            if not exist_ok:
                raise
            created = await self.http.request(
                "GET", f"/v1/namespaces/{segment(self.namespace)}/subscriptions/{segment(name)}"
            )
        return msgspec.convert(created, SubscriptionInfo)


class Namespaces:
    """Namespaces: the tenant boundary; every name lives in one."""

    def __init__(self, http: HttpTransport) -> None:
        self.http = http

    async def create(self, name: str, *, exist_ok: bool = False) -> NamespaceInfo:
        """Create a namespace."""
        try:
            body = await self.http.request("POST", "/v1/namespaces", json={"name": name})
        except errors.AlreadyExists:
            if not exist_ok:
                raise
            body = await self.http.request("GET", f"/v1/namespaces/{segment(name)}")
        return msgspec.convert(body, NamespaceInfo)

    async def list(self) -> list[NamespaceInfo]:
        """Every namespace."""
        items: list[NamespaceInfo] = []
        cursor = None
        while True:
            page = await self.http.request(
                "GET", "/v1/namespaces", params={"limit": PAGE_SIZE, "cursor": cursor}
            )
            items.extend(msgspec.convert(page["items"], list[NamespaceInfo]))
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def get(self, name: str) -> NamespaceInfo:
        """A namespace and its counts."""
        return msgspec.convert(
            await self.http.request("GET", f"/v1/namespaces/{segment(name)}"), NamespaceInfo
        )

    async def delete(self, name: str) -> None:
        """Delete an empty namespace."""
        await self.http.request("DELETE", f"/v1/namespaces/{segment(name)}")
