"""A job queue with a worker pool: 200 jobs published in batches, 8 workers.

Run a server (``relaymq serve``), then::

    python examples/job_queue.py --token ADMIN_KEY

Every job is processed once and acked; a job whose handler raises would be
retried with backoff and end up in ``jobs-dlq`` after 5 tries.
"""

from __future__ import annotations

import asyncio
import json

from _common import arguments

import relaymq

JOBS = 200


async def main() -> None:
    options = arguments(__doc__.splitlines()[0])
    async with relaymq.AsyncClient(
        options.url, token=options.token, namespace=options.namespace
    ) as client:
        await client.queues.create("jobs", exist_ok=True)
        async with client.publisher(linger_ms=5) as publisher:
            for number in range(JOBS):
                await publisher.publish("jobs", json.dumps({"job": number, "size": number % 7}))
        done = asyncio.Event()
        processed: set[int] = set()

        async def handle(message: relaymq.Message) -> None:
            job = message.json()
            await asyncio.sleep(job["size"] / 1000)  # the work
            processed.add(job["job"])
            if len(processed) == JOBS:
                done.set()

        worker = client.worker("jobs", handle, concurrency=8)
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(done.wait(), 60)
        worker.stop()
        await running
        print(f"processed {len(processed)} jobs with 8 workers")


if __name__ == "__main__":
    asyncio.run(main())
