"""No-op handlers for the benchmarks: ``HANDLERS=handlers:registry`` (PYTHONPATH=bench).

Every handler call appends one fixed-size record to ``$BENCH_RECORD_FILE``
(opened with O_APPEND, so several worker processes can share it):
``(i, time.time())`` where ``i`` is the event's ``payload["i"]``. When the
worker has migrated its schema (the last step before its processing loop
starts) it appends ``(-pid, time.time())``: the "ready" marker.

The write is one ``os.write`` of 16 bytes (about 1-2 us), so the recording
costs next to nothing compared with what is measured. With no
``BENCH_RECORD_FILE`` the handler does nothing at all.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

from eventproc import Event, HandlerContext, Registry

RECORD = struct.Struct("<qd")  # (i, unix time): 16 bytes
NOOP_TYPE = "bench.noop"

registry = Registry()

_path = os.environ.get("BENCH_RECORD_FILE")
_fd: int | None = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if _path else None
_pack = RECORD.pack


@registry.handler(NOOP_TYPE, description="benchmark no-op: records its start time")
async def noop(event: Event, ctx: HandlerContext) -> None:
    if _fd is not None:
        os.write(_fd, _pack(event.payload.get("i", -1), time.time()))


@registry.on_migrate
async def _ready(connection: Any) -> None:
    # Runs inside the start-up migration, right before the processor loop.
    if _fd is not None:
        os.write(_fd, _pack(-os.getpid(), time.time()))
