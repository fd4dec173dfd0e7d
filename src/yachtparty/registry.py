"""The pack's :class:`eventproc.Registry`: 12 subscriptions, a schema hook, sample data.

The 12 subscriptions take 11 event types (see :mod:`yachtparty.handlers`).

Handlers register themselves here when :mod:`yachtparty.handlers` is
imported, the schema hook when :mod:`yachtparty.tables` is, the demo's
sample hook when :mod:`yachtparty.sample` is; importing :mod:`yachtparty`
does all three.
"""

from eventproc import Registry

registry = Registry()
