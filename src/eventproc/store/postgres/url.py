"""A PostgreSQL ``DATABASE_URL``: parsed once, checked at start-up, turned into connect arguments.

Users paste libpq URLs (``postgresql://u:p@host:5432/db?sslmode=require&
connect_timeout=10&options=-c%20statement_timeout%3D5s``). asyncpg reads only
part of libpq's vocabulary, and SQLAlchemy's asyncpg dialect passes every
query parameter to ``asyncpg.connect`` as a keyword, so an ordinary
``connect_timeout`` used to crash the first connect. Here the URL becomes one
frozen :class:`PgUrl`, and each kind of connection eventproc opens (the
SQLAlchemy pool, the raw hot-path connections, the LISTEN connection) gets
exactly the arguments meant for it. A parameter eventproc cannot honour is
refused with one line naming it, before anything connects.

A pooler in the way (:class:`Pooler`) changes what may be sent: PgBouncer
refuses every start-up setting but a few (``unsupported startup parameter:
plan_cache_mode``, in session and transaction mode alike), and a transaction
pooler keeps nothing of a session between transactions.
"""

import dataclasses
import enum
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eventproc.store.postgres.options import UrlError, server_options
from eventproc.store.postgres.parameters import (
    DEFAULT_APPLICATION_NAME,
    DEFAULT_CONNECT_TIMEOUT,
    PARAMETERS,
    Values,
    set_hosts,
    unknown,
)
from eventproc.store.postgres.transport import connection_class, system_context

__all__ = ["ConnectionKind", "Keepalives", "PgUrl", "Pooler", "UrlError", "server_options"]

# The start-up settings PgBouncer (1.18 and later) accepts without being
# configured to ignore others, which a Supabase user cannot do.
POOLER_STARTUP = frozenset(
    {"application_name", "client_encoding", "datestyle", "timezone", "standard_conforming_strings"}
)


class Pooler(enum.StrEnum):
    """What stands between eventproc and PostgreSQL (POOLER, or the URL's pgbouncer=)."""

    NONE = "none"  # direct: settings at start-up, named statements cached per connection
    # A session pooler (Supabase's on port 5432 of the pooler host): the
    # client keeps its server connection, so everything works as direct, but
    # settings are SET once after connecting, not sent at start-up.
    SESSION = "session"
    # A transaction pooler (Supabase's port 6543, pgbouncer=true): each
    # transaction may run on another server connection, so no session state
    # at all (see PgUrl.driver_args and PostgresDriver).
    TRANSACTION = "transaction"


class ConnectionKind(enum.Enum):
    """The connections eventproc opens; each gets its own arguments."""

    POOL = "pool"  # SQLAlchemy's pool: publishing, transactional handlers, retries, migrations
    HOT = "hot"  # raw asyncpg connections for claims and completions
    LISTEN = "listen"  # the one LISTEN connection


@dataclass(frozen=True)
class Keepalives:
    """libpq's TCP keepalive parameters (on by default, as in libpq)."""

    enabled: bool = True
    idle: int | None = None  # seconds idle before the first probe (TCP_KEEPIDLE)
    interval: int | None = None  # seconds between probes (TCP_KEEPINTVL)
    count: int | None = None  # probes lost before the connection is dead (TCP_KEEPCNT)
    user_timeout_ms: int | None = None  # unacknowledged data deadline (TCP_USER_TIMEOUT)


@dataclass(frozen=True)
class PgUrl:
    """Everything a PostgreSQL URL says, typed; build it with :meth:`parse`."""

    hosts: tuple[str, ...] = ()  # empty: PGHOST or the local socket, as libpq
    ports: tuple[int, ...] = ()  # empty: PGPORT or 5432; one: for every host; else one per host
    database: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    passfile: str | None = None
    service: str | None = None
    ssl: tuple[tuple[str, str], ...] = ()  # the DSN_ONLY parameters given
    ssl_system_roots: bool = False  # sslrootcert=system
    server_settings: tuple[tuple[str, str], ...] = ()  # from options=-c name=value
    application_name: str | None = None
    fallback_application_name: str | None = None
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT  # None: wait indefinitely
    keepalives: Keepalives = Keepalives()
    target_session_attrs: str | None = None
    krbsrvname: str | None = None
    gsslib: str | None = None
    statement_cache_size: int | None = None  # asyncpg's, on every raw connection
    prepared_statement_cache_size: int | None = None  # SQLAlchemy's, on the pool
    pooler: Pooler | None = None  # pgbouncer=true: TRANSACTION, false: NONE; None: not said

    @classmethod
    def parse(cls, url: str) -> "PgUrl":
        """Parse ``postgresql://`` (or ``postgres://``) URLs; raise UrlError on anything else."""
        return _parse(url)

    @property
    def mode(self) -> Pooler:
        """The pooler eventproc connects through (NONE unless the URL or POOLER says)."""
        return Pooler.NONE if self.pooler is None else self.pooler

    def behind(self, pooler: Pooler | None) -> "PgUrl":
        """This URL with POOLER applied (None: as the URL says); UrlError on a contradiction."""
        if pooler is None or pooler is self.pooler:
            return self
        said = self.pooler
        if said is not None and (said is Pooler.TRANSACTION) != (pooler is Pooler.TRANSACTION):
            given = "pgbouncer=true" if said is Pooler.TRANSACTION else "pgbouncer=false"
            raise UrlError(
                f"{given} contradicts POOLER={pooler.value} "
                "(pgbouncer=true means POOLER=transaction): keep one of them"
            )
        values: Values = {"pooler": pooler}
        if pooler is Pooler.TRANSACTION:
            _check_startup(dict(self.server_settings))
            caches = ("statement_cache_size", "prepared_statement_cache_size")
            values.update(_transaction_caches({name: getattr(self, name) for name in caches}))
        return dataclasses.replace(self, **values)

    @property
    def display(self) -> str:
        """The URL without its password or query, for logs."""
        user = f"{urllib.parse.quote(self.user, safe='')}@" if self.user else ""
        hosts = [f"[{h}]" if ":" in h else urllib.parse.quote(h, safe="") for h in self.hosts]
        if self.ports and hosts:
            ports = self.ports * len(hosts) if len(self.ports) == 1 else self.ports
            hosts = [f"{host}:{port}" for host, port in zip(hosts, ports, strict=True)]
        elif self.ports:
            hosts = [f":{self.ports[0]}"]
        return f"postgresql://{user}{','.join(hosts)}/{self.database or ''}"

    def settings(self, own: Mapping[str, str] | None = None) -> dict[str, str]:
        """Server settings for one connection: eventproc's ``own``, then the URL's.

        The URL's ``options`` come last: what a user sets explicitly wins.
        ``application_name`` (or ``options=-c application_name=...``) names
        the connections in pg_stat_activity; "eventproc" when neither is set.
        """
        merged = dict(own or {})
        merged.update(self.server_settings)
        if self.application_name is not None:
            merged["application_name"] = self.application_name
        merged.setdefault(
            "application_name", self.fallback_application_name or DEFAULT_APPLICATION_NAME
        )
        return merged

    def startup_settings(self, own: Mapping[str, str] | None = None) -> dict[str, str]:
        """What a connection sends at start-up: every setting when direct, few through a pooler.

        A transaction pooler gets neither eventproc's own settings nor any
        the URL could not pass (refused at parsing): ``synchronous_commit``
        cannot hold for a session there, and ``plan_cache_mode`` is not
        needed, since every statement is unnamed and so planned with its own
        values (see PostgresDriver).
        """
        if self.mode is Pooler.NONE:
            return self.settings(own)
        if self.mode is Pooler.SESSION:
            return {"application_name": self.settings()["application_name"]}
        return self.settings()  # the URL's, all of them in POOLER_STARTUP

    def session_settings(self, own: Mapping[str, str] | None = None) -> dict[str, str]:
        """What a connection SETs right after connecting (through a session pooler only)."""
        if self.mode is not Pooler.SESSION:
            return {}
        merged = self.settings(own)
        del merged["application_name"]  # sent at start-up, which PgBouncer allows
        return merged

    def driver_args(
        self, kind: ConnectionKind, own_settings: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Keyword arguments of ``asyncpg.connect`` for a connection of ``kind``."""
        args: dict[str, Any] = {
            name: value
            for name in ("user", "password", "passfile", "service", "database")
            if (value := getattr(self, name)) is not None
        }
        args.update(self._address_args())
        args.update(self._ssl_args())
        if self.target_session_attrs is not None:
            args["target_session_attrs"] = self.target_session_attrs
        if self.krbsrvname is not None:
            args["krbsrvname"] = self.krbsrvname
        if self.gsslib is not None:
            args["gsslib"] = self.gsslib
        args["timeout"] = self.connect_timeout
        args["server_settings"] = self.startup_settings(own_settings)
        cache = self.statement_cache_size
        if cache is None and kind is ConnectionKind.HOT:
            # The hot path runs the statements the pool would otherwise run:
            # a URL that switches the pool's cache off means it for them too.
            cache = self.prepared_statement_cache_size
        if cache is not None:
            args["statement_cache_size"] = cache
        args["connection_class"] = connection_class(self.keepalives)
        return args

    def engine_args(self, own_settings: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``connect_args`` for SQLAlchemy's asyncpg dialect (an empty engine URL)."""
        args = self.driver_args(ConnectionKind.POOL, own_settings)
        if self.prepared_statement_cache_size is not None:
            args["prepared_statement_cache_size"] = self.prepared_statement_cache_size
        return args

    def _address_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.hosts:
            args["host"] = list(self.hosts)
        if self.ports:
            args["port"] = list(self.ports) if len(self.ports) > 1 else self.ports[0]
        return args

    def _ssl_args(self) -> dict[str, Any]:
        if self.ssl_system_roots:
            return {"ssl": system_context(dict(self.ssl))}
        if not self.ssl:
            return {}
        return {"dsn": "postgresql://?" + urllib.parse.urlencode(self.ssl)}


# -- parsing --------------------------------------------------------------------


def _parse(url: str) -> PgUrl:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise UrlError("must start with postgresql:// or postgres://")
    parts = urllib.parse.urlsplit("postgresql://" + rest)
    values: Values = {}
    userinfo, _, hostspec = parts.netloc.rpartition("@")
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        values["user"] = urllib.parse.unquote(user) or None
        if has_password:
            values["password"] = urllib.parse.unquote(password)
    if hostspec:
        set_hosts(values, "host", urllib.parse.unquote(hostspec))
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if database:
        values["database"] = database
    for name, value in _query(parts.query):
        handler = PARAMETERS.get(name)
        if handler is None:
            raise UrlError(unknown(name))
        if value != "":  # libpq: an empty value means "not set"
            handler(values, name, value)
    return _finish(values)


def _query(query: str) -> list[tuple[str, str]]:
    """``a=1&b=2``, percent-decoded as libpq does it (a ``+`` stays a ``+``)."""
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        name, has_value, value = item.partition("=")
        if not has_value:
            raise UrlError(f"query parameter {urllib.parse.unquote(name)!r} has no '=value'")
        pairs.append((urllib.parse.unquote(name), urllib.parse.unquote(value)))
    return pairs


def _finish(values: Values) -> PgUrl:
    ssl_params = dict(values.pop("ssl", {}))
    if values.pop("requiressl", False):
        ssl_params.setdefault("sslmode", "require")
    if ssl_params.get("sslrootcert") == "system":
        if ssl_params.setdefault("sslmode", "verify-full") != "verify-full":
            raise UrlError("sslrootcert=system needs sslmode=verify-full (libpq's rule)")
        del ssl_params["sslrootcert"]
        values["ssl_system_roots"] = True
    values["ssl"] = tuple(sorted(ssl_params.items()))
    hosts, ports = values.get("hosts", ()), values.get("ports", ())
    if len(ports) > 1 and len(ports) != len(hosts):
        raise UrlError(f"{len(ports)} ports for {len(hosts)} hosts")
    values["server_settings"] = tuple(values.pop("settings", {}).items())
    values["keepalives"] = Keepalives(**values.pop("keepalive", {}))
    if "pooler" in values:
        values["pooler"] = Pooler(values["pooler"])
    if values.get("pooler") is Pooler.TRANSACTION:
        _check_startup(dict(values["server_settings"]))
        values.update(_transaction_caches(values))
    return PgUrl(**values)


def _transaction_caches(values: Mapping[str, Any]) -> Values:
    """A transaction pooler keeps no client's prepared statements: both caches off unless set.

    With asyncpg's cache off, every statement (SQLAlchemy's too) is unnamed
    and asyncpg sends its text again with each execution, so it never needs
    the server connection it was described on. Unique names instead (what
    SQLAlchemy suggests for PgBouncer) were measured to fail through PgBouncer
    1.18 in autocommit, where describing and executing are two transactions
    that may land on two server connections: "prepared statement ... does
    not exist".
    """
    return {
        name: 0 if values.get(name) is None else values[name]
        for name in ("statement_cache_size", "prepared_statement_cache_size")
    }


def _check_startup(settings: Mapping[str, str]) -> None:
    for name in settings:
        if name.lower() not in POOLER_STARTUP:
            raise UrlError(
                f"options: {name} cannot be set through a transaction pooler (it keeps no "
                f"session settings): set it on the role instead (ALTER ROLE ... SET {name} = ...)"
            )
