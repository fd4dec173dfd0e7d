"""A handler module that takes seconds to import (HANDLERS=support.slow_start_handlers).

It marks when its import begins, so that a test can send a signal while
the service is still starting, as a slow cold start on a platform would.
"""

import os
import time
from pathlib import Path

from eventproc import Event, HandlerContext, Registry

(Path(os.environ["TEST_MARKS_DIR"]) / "importing").touch()
time.sleep(float(os.environ.get("SLOW_IMPORT_SECONDS", "3")))

registry = Registry()


@registry.handler("test.ok")
async def ok(event: Event, ctx: HandlerContext) -> None:
    pass
