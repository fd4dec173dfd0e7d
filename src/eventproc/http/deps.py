"""FastAPI dependencies: the runtime (auth lives in eventproc.http.auth)."""

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from eventproc.runtime import Runtime


def get_runtime(request: Request) -> "Runtime":
    runtime: Runtime = request.app.state.runtime
    return runtime
