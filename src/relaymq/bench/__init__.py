"""``relaymq bench``: the benchmark every claim about RelayMQ's speed comes from.

It drives a server (one it spawns on an embedded store in a temporary
directory, or a running one) through the Python SDK over WebSocket, or the
REST API over HTTP, with one of four workloads (:mod:`~relaymq.bench.workloads`),
checks that every confirmed message arrived (:mod:`~relaymq.bench.verify`), and
reports throughput, end-to-end latency percentiles (:mod:`~relaymq.bench.histogram`)
and the server's CPU and peak memory (:mod:`~relaymq.bench.server_stats`).
``docs/performance.md`` has the method and the figures.
"""
