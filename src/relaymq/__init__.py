"""RelayMQ: durable queues, pub/sub topics and replayable event streams behind Message APIs."""

__version__ = "0.1.0"
