"""The engine: claim events, run them through their handlers, write the results back.

:class:`Processor` wires the parts (see ``engine/processor.py``); nothing
here imports SQLAlchemy or a backend: the store is reached through its
protocol only (tests/unit/test_architecture.py).
"""

from eventproc.engine.processor import Processor, default_worker_id
from eventproc.engine.producer import Signals

__all__ = ["Processor", "Signals", "default_worker_id"]
