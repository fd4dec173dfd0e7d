"""The service as ``eventproc run`` and the demo start it: a Runtime with eventproc's HTTP app.

The wiring lives here, above both, because :mod:`eventproc.http` reads the
runtime (health, triggers, metrics) and the runtime must not import it back:
the import graph stays one-way.
"""

from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.registry import Registry
from eventproc.runtime import Runtime


def build_runtime(settings: Settings, *, registry: Registry | None = None) -> Runtime:
    """A Runtime whose ``serve(http=True)`` serves health, triggers, metrics and docs."""
    return Runtime(settings, registry=registry, http_app=create_app)
