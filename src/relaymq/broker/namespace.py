"""One tenant's names: its streams, subscriptions, and the subject routing between them.

Subjects route to streams through a :class:`SubjectIndex` (a trie), so a publish
costs a few dictionary steps per subject token whatever the number of streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relaymq.broker.stream import StreamHandle
from relaymq.broker.subscription import SubscriptionHandle
from relaymq.core.subjects import SubjectIndex, validate_subject
from relaymq.errors import NoStreamForSubject, StreamNotFound, SubjectOverlap, SubscriptionNotFound

ROUTE_CACHE_SIZE = 10_000


@dataclass
class Namespace:
    """The streams and subscriptions of one namespace."""

    name: str
    created_ms: int
    streams: dict[str, StreamHandle] = field(default_factory=dict)
    subscriptions: dict[str, SubscriptionHandle] = field(default_factory=dict)
    routes: SubjectIndex[StreamHandle] = field(default_factory=SubjectIndex)
    # subject -> stream for subjects already validated and routed; cleared on any route change.
    route_cache: dict[str, StreamHandle] = field(default_factory=dict)

    def stream(self, name: str) -> StreamHandle:
        """The stream called ``name``, or :class:`StreamNotFound`."""
        stream = self.streams.get(name)
        if stream is None:
            raise StreamNotFound(f"stream {name!r} not found", namespace=self.name, stream=name)
        return stream

    def subscription(self, name: str) -> SubscriptionHandle:
        """The subscription called ``name``, or :class:`SubscriptionNotFound`."""
        subscription = self.subscriptions.get(name)
        if subscription is None:
            raise SubscriptionNotFound(
                f"subscription {name!r} not found", namespace=self.name, subscription=name
            )
        return subscription

    def route(self, subject: str) -> StreamHandle:
        """The stream that captures ``subject`` (validated), or :class:`NoStreamForSubject`."""
        stream = self.route_cache.get(subject)
        if stream is not None:
            return stream
        validate_subject(subject)
        matches = self.routes.match(subject)
        if matches:
            if len(self.route_cache) >= ROUTE_CACHE_SIZE:
                self.route_cache.clear()
            self.route_cache[subject] = matches[0]
            return matches[0]
        raise NoStreamForSubject(
            f"no stream captures subject {subject!r}", namespace=self.name, subject=subject
        )

    def check_no_overlap(self, subjects: list[str], ignore: StreamHandle | None = None) -> None:
        """Raise :class:`SubjectOverlap` if another stream already captures one of ``subjects``."""
        for subject in subjects:
            for other in self.routes.overlapping(subject):
                if other is not ignore:
                    raise SubjectOverlap(
                        f"subject {subject!r} overlaps the subjects of stream {other.name!r}",
                        subject=subject,
                        stream=other.name,
                    )

    def add_routes(self, stream: StreamHandle) -> None:
        """Route the stream's subjects to it."""
        self.route_cache.clear()
        for subject in stream.config.subjects:
            self.routes.add(subject, stream)

    def remove_routes(self, stream: StreamHandle) -> None:
        """Stop routing the stream's subjects to it."""
        self.route_cache.clear()
        for subject in stream.config.subjects:
            self.routes.remove(subject, stream)
