"""`gateway.waking.within`: an await with a time limit that never loses the caller's cancellation (the stop).

On Python 3.11, `asyncio.wait_for` loses a cancellation that lands in the same turn of the loop as the answer
it waits for (CPython gh-86296): the task goes on as if it had not been stopped, and a shutdown waiting for
it waits forever. The gateway therefore never calls `wait_for` (the last test reads its source for it).
"""

from __future__ import annotations

import ast
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.waking import within

Wait = Callable[[Awaitable[int], float], Awaitable[int]]


async def _stopped_as_the_answer_arrives(wait: Wait) -> str:
    """Run a task that awaits an answer through `wait`; the task is cancelled in the same turn of the loop
    as the answer comes. 'stopped' when the cancellation reached it, 'went on' when it was lost."""
    loop = asyncio.get_running_loop()
    caller: asyncio.Task[str] | None = None

    async def answer() -> int:
        assert caller is not None
        loop.call_soon(caller.cancel)  # the stop, queued just ahead of the answer's own wake-up
        return 42

    async def call() -> str:
        await wait(answer(), 5.0)
        await asyncio.sleep(0.01)  # the next await: a cancellation still pending is delivered here
        return "went on"

    caller = asyncio.create_task(call())
    try:
        return await asyncio.wait_for(caller, 5.0)  # the test's own wait: a bound, not the subject
    except asyncio.CancelledError:
        return "stopped"


async def test_a_stop_that_arrives_with_the_answer_stops_the_task() -> None:
    assert await _stopped_as_the_answer_arrives(within) == "stopped"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancellation from Python 3.12 on")
async def test_python_3_11_wait_for_loses_that_stop() -> None:
    """Why `within` exists: the same race through `asyncio.wait_for` on 3.11. If this ever fails, the
    interpreter no longer has the bug, not the gateway."""
    assert await _stopped_as_the_answer_arrives(asyncio.wait_for) == "went on"


async def test_within_gives_the_answer_or_a_timeout_and_cancels_what_it_waited_for() -> None:
    assert await within(asyncio.sleep(0, result=7), 1.0) == 7
    slow = asyncio.ensure_future(asyncio.sleep(10))
    with pytest.raises(TimeoutError):
        await within(slow, 0.05)
    assert slow.cancelled()
    shielded = asyncio.ensure_future(asyncio.sleep(0.1, result="done"))
    with pytest.raises(TimeoutError):
        await within(asyncio.shield(shielded), 0.01)
    assert await shielded == "done"  # shielded: it ran on


def _wait_for_calls(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "wait_for":
            value: Any = node.value
            if isinstance(value, ast.Name) and value.id == "asyncio":
                lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "asyncio":
            lines.extend(node.lineno for alias in node.names if alias.name == "wait_for")
    return lines


def test_no_module_of_the_gateway_calls_wait_for() -> None:
    root = Path(__file__).resolve().parents[1] / "gateway"
    found = [f"{path.relative_to(root.parent)}:{line}"
             for path in sorted(root.rglob("*.py"))
             for line in _wait_for_calls(ast.parse(path.read_text(), str(path)))]
    assert found == [], f"asyncio.wait_for can lose a stop on Python 3.11; use gateway.waking.within: {found}"
