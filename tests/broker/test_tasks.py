"""Hot-path tasks start at once where Python can (3.12+), else like create_task."""

from __future__ import annotations

import asyncio

from relaymq.broker.tasks import EAGER_TASKS, start_task


async def test_the_first_step_runs_inside_the_call_where_python_can() -> None:
    steps: list[str] = []

    async def body() -> str:
        steps.append("first")
        await asyncio.sleep(0)
        steps.append("second")
        return "done"

    task = start_task(body())
    assert steps == (["first"] if EAGER_TASKS else [])
    assert await task == "done"
    assert steps == ["first", "second"]


async def test_a_failure_in_the_first_step_is_the_tasks_own() -> None:
    async def body() -> None:
        raise ValueError("bad frame")

    task = start_task(body())  # does not raise here, eager or not
    try:
        await task
    except ValueError as error:
        assert str(error) == "bad frame"
    else:
        raise AssertionError("the task should have failed")
