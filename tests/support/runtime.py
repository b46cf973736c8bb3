"""A runtime in this process for the tests that need one running: started, without its status endpoint."""

from __future__ import annotations

import asyncio

from gateway.config import GatewayConfig
from gateway.runtime.loop import Runtime


async def running(config: GatewayConfig) -> tuple[Runtime, asyncio.Task[None]]:
    """A runtime on `config` (no status endpoint), started; the caller stops it and awaits the task."""
    runtime = Runtime(config, serve_status=False)
    task = asyncio.create_task(runtime.run())
    await asyncio.wait_for(runtime.started.wait(), 10)
    return runtime, task
