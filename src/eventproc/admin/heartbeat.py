"""A worker's reports: its heartbeat (eventproc_workers), its handlers' stats, the paused set.

(Being built for issue 15: the heartbeat, handler_stats flushes and the
refresh of paused subscriptions.)
"""

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventproc.runtime import Runtime


async def keep_reporting(runtime: "Runtime") -> None:
    await asyncio.Event().wait()
