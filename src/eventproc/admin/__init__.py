"""The admin surface's core, below HTTP: who may do what, redaction, bulk operations, stats.

The admin API (eventproc.http.admin) and the CLI stand on this and on
``Store.admin`` (eventproc.store.admin); nothing here imports HTTP.
"""
