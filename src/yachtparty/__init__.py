"""The Yachtparty handler pack for eventproc: 11 event types, their models, their tables.

``yachtparty:registry`` is what ``HANDLERS`` points at by default. The pack's
contract is /work/shared/yachtparty-handlers.md. Modules:

- :mod:`yachtparty.models`   payload models (one per event type)
- :mod:`yachtparty.tables`   the 8 tables and the schema hook that creates them
- :mod:`yachtparty.queries`  insert a row at most once (on eventproc.columns)
- :mod:`yachtparty.ids`      deterministic ids for everything a handler creates
- :mod:`yachtparty.effects`  agent tasks, follow-up events, referent checks
- :mod:`yachtparty.handlers` the 12 subscriptions (which handler is split, and why)
- :mod:`yachtparty.cache`    the cache-invalidation extension point
- :mod:`yachtparty.sample`   sample data and a traffic generator (the demo's sample hook, tests)
"""

from yachtparty import handlers as handlers
from yachtparty import sample as sample
from yachtparty import tables as tables
from yachtparty.registry import registry

__all__ = ["registry"]
