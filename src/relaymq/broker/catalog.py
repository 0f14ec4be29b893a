"""The durable list of namespaces, streams and subscriptions, as metadata documents.

Definitions are stored as JSON documents (``msgspec.to_builtins`` of the config
structs) in the metadata store under the kinds below, keyed
``namespace/name``; loading converts them back and validates their shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from relaymq.broker.models import StreamConfig, SubscriptionConfig
from relaymq.store.base import MetadataStore

NAMESPACE_KIND = "namespace"
STREAM_KIND = "stream"
SUBSCRIPTION_KIND = "subscription"

Config = TypeVar("Config", StreamConfig, SubscriptionConfig)


@dataclass(frozen=True, slots=True)
class Definition(Generic[Config]):
    """A stored stream or subscription definition."""

    namespace: str
    config: Config
    created_ms: int


class Catalog:
    """Reads and writes definitions in a :class:`MetadataStore`."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata

    async def save_namespace(self, name: str, created_ms: int) -> None:
        await self._metadata.put_document(
            NAMESPACE_KIND, name, {"name": name, "created_ms": created_ms}
        )

    async def delete_namespace(self, name: str) -> None:
        await self._metadata.delete_document(NAMESPACE_KIND, name)

    async def namespaces(self) -> list[tuple[str, int]]:
        """Every stored namespace as ``(name, created_ms)``."""
        documents = await self._metadata.list_documents(NAMESPACE_KIND)
        return [(document["name"], int(document["created_ms"])) for document in documents]

    async def save(self, kind: str, namespace: str, config: Config, created_ms: int) -> None:
        """Store a stream (``kind=STREAM_KIND``) or subscription definition."""
        document = {
            "namespace": namespace,
            "created_ms": created_ms,
            "config": msgspec.to_builtins(config),
        }
        await self._metadata.put_document(kind, f"{namespace}/{config.name}", document)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        await self._metadata.delete_document(kind, f"{namespace}/{name}")

    async def load(self, kind: str, config_type: type[Config]) -> list[Definition[Config]]:
        """Every stored definition of ``kind``, converted to ``config_type``."""
        documents = await self._metadata.list_documents(kind)
        return [
            Definition(
                namespace=document["namespace"],
                config=msgspec.convert(document["config"], config_type),
                created_ms=int(document["created_ms"]),
            )
            for document in documents
        ]
