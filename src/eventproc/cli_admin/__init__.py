"""The CLI for a bad day: ``events``, ``dlq``, ``replay``, ``handlers``, ``ops``, ``stats``.

Every command calls the admin API (/admin/v1), either of a running service
(``--url`` / ``EVENTPROC_URL``, token from ``--token`` / ``EVENTPROC_TOKEN``)
or in-process on the database (no URL: ``--database-url``, else the
settings' DATABASE_URL), so both behave alike. Listings print Rich tables,
or with ``--json`` the API's JSON as one document. Bulk commands are a dry
run until ``--execute --reason``; then they follow the operation's progress.

Exit codes, for scripts:

- 0  done (a dry run included)
- 1  refused or failed: the API answered 4xx other than 404 (401/403 a token
     or role, 409 a conflict, 422 a bad value), or 500; an operation that
     ended cancelled or failed
- 2  bad usage or configuration (flags, settings, HANDLERS), before any call
- 3  not found (404: no such event, dead letter, subscription, operation)
- 4  service or database unreachable (no connection, 502/503/504, no SQLite file)
- 130 interrupted (Ctrl-C; a followed operation goes on)

Errors are one line on stderr: ``error: <message> (HTTP <status>)`` for an
API answer, ``error: cannot reach eventproc at <url>: ...`` for a connection.
"""

from eventproc.cli_admin.dlq import dlq_app
from eventproc.cli_admin.events import events_app, replay
from eventproc.cli_admin.handlers import handlers_app
from eventproc.cli_admin.ops import ops_app
from eventproc.cli_admin.stats import stats

__all__ = ["dlq_app", "events_app", "handlers_app", "ops_app", "replay", "stats"]
