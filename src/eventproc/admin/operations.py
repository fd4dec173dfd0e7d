"""Bulk operations: planned as a dry run, executed in batches at a rate by any worker.

(Being built for issue 15.)
"""

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventproc.runtime import Runtime


async def carry_operations(runtime: "Runtime") -> None:
    await asyncio.Event().wait()
