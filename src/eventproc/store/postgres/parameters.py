"""The URL's query parameters: what each means, and which are refused and why.

libpq's vocabulary, plus the driver options people put in URLs for PgBouncer
and Supabase. Each handler reads one parameter into the PgUrl fields being
built; a parameter eventproc cannot honour is refused with one line naming it.
"""

import re
from collections.abc import Callable
from typing import Any

from eventproc.store.postgres.options import UrlError, server_options

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


Values = dict[str, Any]  # PgUrl fields being built
_Handler = Callable[[Values, str, str], None]


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


def unknown(name: str) -> str:
    reason = UNSUPPORTED.get(name)
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
    def handler(values: Values, name: str, value: str) -> None:
        values[target] = value

    return handler


def set_hosts(values: Values, name: str, value: str) -> None:
    hosts, ports = _hostlist(value)
    if "" in hosts:  # ":5433": the default host, that port
        hosts = ()
    values["hosts"] = hosts
    if any(port is not None for port in ports):
        values["ports"] = tuple(DEFAULT_PORT if port is None else port for port in ports)


def _set_ports(values: Values, name: str, value: str) -> None:
    values["ports"] = tuple(_port(item) for item in value.split(","))


def _set_ssl(values: Values, name: str, value: str) -> None:
    if name in ("sslmode", "ssl"):
        name, value = "sslmode", _choice(name, value, SSL_MODES)
    elif name in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
        _choice(name, value, TLS_VERSIONS)
    elif name == "sslnegotiation":
        _choice(name, value, ("postgres", "direct"))
    values.setdefault("ssl", {})[name] = value


def _set_requiressl(values: Values, name: str, value: str) -> None:
    values["requiressl"] = _flag(name, value)


def _set_timeout(values: Values, name: str, value: str) -> None:
    try:
        seconds = int(value.strip())
    except ValueError:
        raise UrlError(f"{name}={value!r} must be a whole number of seconds") from None
    # libpq: zero or negative waits indefinitely; the least timeout is 2 s.
    values["connect_timeout"] = None if seconds <= 0 else float(max(seconds, 2))


def _set_keepalive(target: str) -> _Handler:
    def handler(values: Values, name: str, value: str) -> None:
        keepalive = values.setdefault("keepalive", {})
        if target == "enabled":
            keepalive["enabled"] = _whole(name, value) != 0
        else:
            keepalive[target] = _whole(name, value)

    return handler


def _set_options(values: Values, name: str, value: str) -> None:
    values.setdefault("settings", {}).update(server_options(value))


def _set_cache(values: Values, name: str, value: str) -> None:
    values[name] = _whole(name, value)


def _set_pooler(values: Values, name: str, value: str) -> None:
    # Prisma's spelling, which Supabase documents: true means a transaction pooler.
    values["pooler"] = "transaction" if _flag(name, value) else "none"


def _set_session_attrs(values: Values, name: str, value: str) -> None:
    values["target_session_attrs"] = _choice(name, value, SESSION_ATTRS)


def _only(*accepted: str, reason: str) -> _Handler:
    """A libpq parameter accepted only with the value(s) that describe what asyncpg does."""

    def handler(values: Values, name: str, value: str) -> None:
        if value.lower() not in accepted:
            raise UrlError(f"{name}={value!r} is not supported ({reason})")

    return handler


PARAMETERS: dict[str, _Handler] = {
    "host": set_hosts,
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

UNSUPPORTED = {
    "hostaddr": "asyncpg connects to the host part; put the address there",
    "require_auth": "asyncpg cannot restrict the authentication method",
    "replication": "eventproc does not open replication connections",
    "requirepeer": "asyncpg cannot check the server's user on a socket",
    "sslcrldir": "asyncpg reads one CRL file: use sslcrl",
    "sslkeylogfile": "set SSLKEYLOGFILE in the environment instead",
}
