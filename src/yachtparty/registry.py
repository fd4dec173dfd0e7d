"""The pack's :class:`eventproc.Registry`: its 11 handlers and its schema hook.

Handlers register themselves here when :mod:`yachtparty.handlers` is
imported, the schema hook when :mod:`yachtparty.tables` is; importing
:mod:`yachtparty` does both.
"""

from eventproc import Registry

registry = Registry()
