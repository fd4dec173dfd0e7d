"""What a connection gets: libpq's TCP keepalives, the system's TLS trust, session settings.

Built once per setting and imported only where asyncpg is needed.
"""

import functools
import socket
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventproc.store.postgres.url import Keepalives


@functools.cache
def connection_class(keepalives: "Keepalives") -> type[Any]:
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
            # Described unnamed statements by text, kept by PostgresDriver
            # when asyncpg's own (named) cache is off.
            self.unnamed: dict[str, Any] = {}
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                for level, option, value in options:
                    sock.setsockopt(level, option, value)

    return Connection


# One round trip for any number of settings, with no quoting of names or values.
SET_SESSION = (
    "SELECT set_config(name, setting, false)"
    " FROM unnest($1::text[], $2::text[]) AS s(name, setting)"
)


def session_arguments(settings: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """SET_SESSION's arguments for ``settings``."""
    return list(settings), list(settings.values())


async def connect(args: Mapping[str, Any], settings: Mapping[str, str]) -> Any:
    """``asyncpg.connect(**args)``, then ``settings`` SET for the session (a session pooler)."""
    import asyncpg

    connection = await asyncpg.connect(**args)
    if settings:
        try:
            await connection.execute(SET_SESSION, *session_arguments(settings))
        except BaseException:
            connection.terminate()
            raise
    return connection


def _socket_options(keepalives: "Keepalives") -> list[tuple[int, int, int]]:
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


def system_context(params: dict[str, str]) -> ssl.SSLContext:
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
