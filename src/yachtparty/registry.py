"""The pack's :class:`eventproc.Registry`: its 11 handlers, its schema hook, its sample data.

Handlers register themselves here when :mod:`yachtparty.handlers` is
imported, the schema hook when :mod:`yachtparty.tables` is, the demo's
sample hook when :mod:`yachtparty.sample` is; importing :mod:`yachtparty`
does all three.
"""

from eventproc import Registry

registry = Registry()
