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
"""

import enum
import functools
import re
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds, when the URL sets no connect_timeout
DEFAULT_APPLICATION_NAME = "eventproc"  # libpq's fallback_application_name, by default
DEFAULT_PORT = 5432

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
# asyncpg reads these only from a connection string, never from keywords.
DSN_ONLY = (
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslpassword",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "sslnegotiation",
)


class UrlError(ValueError):
    """The URL cannot be honoured; the message is one line and never shows the password."""


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
    pooler: bool = False  # pgbouncer=true: a transaction pooler is in the way

    @classmethod
    def parse(cls, url: str) -> "PgUrl":
        """Parse ``postgresql://`` (or ``postgres://``) URLs; raise UrlError on anything else."""
        return _parse(url)

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
        args["server_settings"] = self.settings(own_settings)
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
            return {"ssl": _system_context(dict(self.ssl))}
        if not self.ssl:
            return {}
        return {"dsn": "postgresql://?" + urllib.parse.urlencode(self.ssl)}


# -- parsing --------------------------------------------------------------------

_Values = dict[str, Any]  # PgUrl fields being built
_Handler = Callable[[_Values, str, str], None]


def _parse(url: str) -> PgUrl:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise UrlError("must start with postgresql:// or postgres://")
    parts = urllib.parse.urlsplit("postgresql://" + rest)
    values: _Values = {}
    userinfo, _, hostspec = parts.netloc.rpartition("@")
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        values["user"] = urllib.parse.unquote(user) or None
        if has_password:
            values["password"] = urllib.parse.unquote(password)
    if hostspec:
        _set_hosts(values, "host", urllib.parse.unquote(hostspec))
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if database:
        values["database"] = database
    for name, value in _query(parts.query):
        handler = _PARAMETERS.get(name)
        if handler is None:
            raise UrlError(_unknown(name))
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


def _finish(values: _Values) -> PgUrl:
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
    if values.pop("pooler_defaults", False):
        # pgbouncer=true: a transaction pooler does not keep a client's
        # prepared statements between transactions; both caches off unless set.
        values.setdefault("statement_cache_size", 0)
        values.setdefault("prepared_statement_cache_size", 0)
    return PgUrl(**values)


def _hostlist(spec: str) -> tuple[tuple[str, ...], tuple[int | None, ...]]:
    """``h1:5432,[::1]:5433,/run/postgresql`` -> hosts and their ports (None: not given)."""
    hosts: list[str] = []
    ports: list[int | None] = []
    for item in spec.split(","):
        if item.startswith("["):
            match = re.fullmatch(r"\[([^\]]+)\](?::(\d*))?", item)
            if match is None:
                raise UrlError(f"cannot read the host {item!r}")
            host, port = match.group(1), match.group(2) or ""
        elif item.startswith("/"):
            host, port = item, ""  # a Unix socket directory
        else:
            host, _, port = item.partition(":")
        if not host and not port:
            raise UrlError("a host in the list is empty")
        hosts.append(host)
        ports.append(_port(port) if port else None)
    return tuple(hosts), tuple(ports)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UrlError(f"port {text!r} is not a number between 1 and 65535")
    return int(text)


def _unknown(name: str) -> str:
    reason = _UNSUPPORTED.get(name)
    if reason is not None:
        return f"parameter {name!r} is not supported ({reason})"
    return (
        f"unsupported parameter {name!r} (eventproc takes libpq's connection parameters "
        "and pgbouncer, statement_cache_size, prepared_statement_cache_size)"
    )


def _whole(name: str, value: str, low: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low:
        raise UrlError(f"{name}={value!r} must be a whole number >= {low}")
    return number


def _flag(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UrlError(f"{name}={value!r} must be true or false (or 1 or 0)")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UrlError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


# -- one handler per parameter --------------------------------------------------


def _set(target: str) -> _Handler:
    def handler(values: _Values, name: str, value: str) -> None:
        values[target] = value

    return handler


def _set_hosts(values: _Values, name: str, value: str) -> None:
    hosts, ports = _hostlist(value)
    if "" in hosts:  # ":5433": the default host, that port
        hosts = ()
    values["hosts"] = hosts
    if any(port is not None for port in ports):
        values["ports"] = tuple(DEFAULT_PORT if port is None else port for port in ports)


def _set_ports(values: _Values, name: str, value: str) -> None:
    values["ports"] = tuple(_port(item) for item in value.split(","))


def _set_ssl(values: _Values, name: str, value: str) -> None:
    if name in ("sslmode", "ssl"):
        name, value = "sslmode", _choice(name, value, SSL_MODES)
    elif name in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
        _choice(name, value, TLS_VERSIONS)
    elif name == "sslnegotiation":
        _choice(name, value, ("postgres", "direct"))
    values.setdefault("ssl", {})[name] = value


def _set_requiressl(values: _Values, name: str, value: str) -> None:
    values["requiressl"] = _flag(name, value)


def _set_timeout(values: _Values, name: str, value: str) -> None:
    try:
        seconds = int(value.strip())
    except ValueError:
        raise UrlError(f"{name}={value!r} must be a whole number of seconds") from None
    # libpq: zero or negative waits indefinitely; the least timeout is 2 s.
    values["connect_timeout"] = None if seconds <= 0 else float(max(seconds, 2))


def _set_keepalive(target: str) -> _Handler:
    def handler(values: _Values, name: str, value: str) -> None:
        keepalive = values.setdefault("keepalive", {})
        if target == "enabled":
            keepalive["enabled"] = _whole(name, value) != 0
        else:
            keepalive[target] = _whole(name, value)

    return handler


def _set_options(values: _Values, name: str, value: str) -> None:
    values.setdefault("settings", {}).update(server_options(value))


def _set_cache(values: _Values, name: str, value: str) -> None:
    values[name] = _whole(name, value)


def _set_pooler(values: _Values, name: str, value: str) -> None:
    values["pooler"] = values["pooler_defaults"] = _flag(name, value)


def _set_session_attrs(values: _Values, name: str, value: str) -> None:
    values["target_session_attrs"] = _choice(name, value, SESSION_ATTRS)


def _only(*accepted: str, reason: str) -> _Handler:
    """A libpq parameter accepted only with the value(s) that describe what asyncpg does."""

    def handler(values: _Values, name: str, value: str) -> None:
        if value.lower() not in accepted:
            raise UrlError(f"{name}={value!r} is not supported ({reason})")

    return handler


_PARAMETERS: dict[str, _Handler] = {
    "host": _set_hosts,
    "port": _set_ports,
    "dbname": _set("database"),
    "user": _set("user"),
    "password": _set("password"),
    "passfile": _set("passfile"),
    "service": _set("service"),
    "connect_timeout": _set_timeout,
    "application_name": _set("application_name"),
    "fallback_application_name": _set("fallback_application_name"),
    "options": _set_options,
    "keepalives": _set_keepalive("enabled"),
    "keepalives_idle": _set_keepalive("idle"),
    "keepalives_interval": _set_keepalive("interval"),
    "keepalives_count": _set_keepalive("count"),
    "tcp_user_timeout": _set_keepalive("user_timeout_ms"),
    "target_session_attrs": _set_session_attrs,
    "krbsrvname": _set("krbsrvname"),
    "gsslib": _set("gsslib"),
    "ssl": _set_ssl,  # asyncpg's and SQLAlchemy's spelling of sslmode
    **{name: _set_ssl for name in DSN_ONLY},
    "requiressl": _set_requiressl,
    "client_encoding": _only("utf8", "utf-8", "unicode", reason="asyncpg speaks UTF8 only"),
    "channel_binding": _only("disable", "prefer", reason="asyncpg has no channel binding"),
    "gssencmode": _only("disable", "prefer", reason="asyncpg has no GSSAPI encryption"),
    "sslcompression": _only("0", reason="TLS compression is not available"),
    "sslsni": _only("1", reason="asyncpg always sends SNI"),
    "sslcertmode": _only("allow", reason="asyncpg sends a client certificate when it has one"),
    "load_balance_hosts": _only("disable", reason="asyncpg tries the hosts in order"),
    "gssdelegation": _only("0", reason="asyncpg does not delegate GSSAPI credentials"),
    # Not libpq's: driver options people put in URLs for PgBouncer and Supabase.
    "pgbouncer": _set_pooler,
    "statement_cache_size": _set_cache,
    "prepared_statement_cache_size": _set_cache,
}

_UNSUPPORTED = {
    "hostaddr": "asyncpg connects to the host part; put the address there",
    "require_auth": "asyncpg cannot restrict the authentication method",
    "replication": "eventproc does not open replication connections",
    "requirepeer": "asyncpg cannot check the server's user on a socket",
    "sslcrldir": "asyncpg reads one CRL file: use sslcrl",
    "sslkeylogfile": "set SSLKEYLOGFILE in the environment instead",
}


def server_options(text: str) -> dict[str, str]:
    """libpq's ``options``: ``-c name=value`` and ``--name=value``, space-separated.

    A backslash keeps the next character (a space inside a value). Other
    server command-line switches are refused: asyncpg sends settings, not a
    command line.
    """
    words = _split_options(text)
    settings: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            setting, index = words[index + 1], index + 2
        elif len(word) > 2 and word.startswith(("-c", "--")):
            setting, index = word[2:], index + 1
        else:
            raise UrlError(f"options: {word!r} is not supported (only -c name=value settings)")
        key, has_value, value = setting.partition("=")
        if not has_value or not key:
            raise UrlError(f"options: {setting!r} is not name=value")
        settings[key.replace("-", "_")] = value
    return settings


def _split_options(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


# -- what needs asyncpg, built once per setting -----------------------------------


@functools.cache
def connection_class(keepalives: Keepalives) -> type[Any]:
    """An ``asyncpg.Connection`` that sets libpq's TCP options on its socket.

    asyncpg sets none of them (only TCP_NODELAY); libpq turns keepalives on
    by default, which is how a half-open connection to a vanished server is
    noticed. ``connection_class`` is asyncpg's documented way in.
    """
    import asyncpg

    options = _socket_options(keepalives)

    class Connection(asyncpg.Connection):  # type: ignore[misc]
        def __init__(self, protocol: Any, transport: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(protocol, transport, *args, **kwargs)
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                for level, option, value in options:
                    sock.setsockopt(level, option, value)

    return Connection


def _socket_options(keepalives: Keepalives) -> list[tuple[int, int, int]]:
    wanted: list[tuple[int, int, int]] = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(keepalives.enabled))
    ]
    if keepalives.enabled:
        for name, value in (
            ("TCP_KEEPIDLE", keepalives.idle),
            ("TCP_KEEPINTVL", keepalives.interval),
            ("TCP_KEEPCNT", keepalives.count),
        ):
            if value and hasattr(socket, name):  # 0: the system's default, as in libpq
                wanted.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    timeout = keepalives.user_timeout_ms
    if timeout and hasattr(socket, "TCP_USER_TIMEOUT"):
        wanted.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout))
    return wanted


def _system_context(params: dict[str, str]) -> ssl.SSLContext:
    """sslrootcert=system (libpq 16): the system's trust store, verify-full."""
    context = ssl.create_default_context()
    minimum = params.get("ssl_min_protocol_version", "TLSv1.2")  # libpq's default
    context.minimum_version = ssl.TLSVersion[minimum.replace(".", "_")]
    if "ssl_max_protocol_version" in params:
        maximum = params["ssl_max_protocol_version"]
        context.maximum_version = ssl.TLSVersion[maximum.replace(".", "_")]
    if "sslcert" in params:
        password = params.get("sslpassword")
        context.load_cert_chain(
            params["sslcert"], params.get("sslkey"), password=(lambda: password or "")
        )
    return context
