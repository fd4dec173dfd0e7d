"""AdminClient: the admin API (/admin/v1) through one async httpx client, remote or in-process.

Remote: ``--url`` / ``EVENTPROC_URL``, with ``--token`` / ``EVENTPROC_TOKEN``
as the bearer token. Local (no URL): a Runtime built from the settings (or
``--database-url``), its app called in-process through ``httpx.ASGITransport``;
its processor is never started. Holding the database is holding everything,
so a local client is an admin whatever tokens the settings name, and its
audit rows name ``cli:<user>@<host>`` (the header every request carries).

Every failure becomes an :class:`AdminError`: one line and an exit code.
"""

import contextlib
import getpass
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventproc.errors import ConfigError, EventprocError, StoreError

if TYPE_CHECKING:
    import httpx

    from eventproc.runtime import Runtime

PREFIX = "/admin/v1"
ACTOR_HEADER = "X-Eventproc-Actor"
TIMEOUT_SECONDS = 30.0
LOCAL_BASE = "http://eventproc.local"

# Exit codes (see the package docstring).
OK, FAILED, USAGE, NOT_FOUND, UNREACHABLE = 0, 1, 2, 3, 4
_UNREACHABLE_STATUSES = frozenset({502, 503, 504})  # 503: the service's database is away


class AdminError(Exception):
    """A one-line failure and the exit code it ends the command with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Target:
    """Where the commands go: a service's URL, or (url None) the database itself."""

    url: str | None = None
    token: str | None = None
    database_url: str | None = None


def exit_code(status: int) -> int:
    if status == 404:
        return NOT_FOUND
    if status in _UNREACHABLE_STATUSES:
        return UNREACHABLE
    return FAILED


def actor() -> str:
    """``cli:<user>@<host>``: who the audit trail names when no token says."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's odd uid)
        user = os.environ.get("USER") or f"uid{os.getuid()}"
    return f"cli:{user}@{socket.gethostname()}"


def error_line(response: "httpx.Response") -> str:
    """``<message> (HTTP <status>)`` from a JSON error answer (or the status's phrase)."""
    message = response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            where = ".".join(str(part) for part in detail[0].get("loc", ()))
            message = f"{message}: {where}: {detail[0].get('msg')}"
    return f"{message} (HTTP {response.status_code})"


class AdminClient:
    """Calls /admin/v1 and answers its JSON, or raises AdminError."""

    def __init__(
        self, http: "httpx.AsyncClient", where: str, runtime: "Runtime | None" = None
    ) -> None:
        self.http = http
        self.where = where  # the URL, or the database, for error lines
        self.runtime = runtime  # local mode: nobody else may carry operations

    @property
    def local(self) -> bool:
        return self.runtime is not None

    async def get(self, resource: str, params: dict[str, Any] | None = None) -> Any:
        given = {key: value for key, value in (params or {}).items() if value is not None}
        return await self._call("GET", resource, params=given)

    async def post(self, resource: str, body: dict[str, Any] | None = None) -> Any:
        return await self._call("POST", resource, json=body or {})

    async def _call(self, method: str, resource: str, **given: Any) -> Any:
        import httpx

        try:
            response = await self.http.request(method, PREFIX + resource, **given)
        except httpx.TransportError as exc:
            raise AdminError(
                f"cannot reach eventproc at {self.where}: {_reason(exc)}", UNREACHABLE
            ) from None
        if response.status_code >= 400:
            raise AdminError(error_line(response), exit_code(response.status_code))
        try:
            return response.json()
        except ValueError:
            raise AdminError(
                f"{self.where} answered {response.status_code} with no JSON: is it eventproc?",
                FAILED,
            ) from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


@contextlib.asynccontextmanager
async def open_client(target: Target) -> AsyncIterator[AdminClient]:
    """The client for ``target``, closed (with the local runtime's store) at the end."""
    import httpx  # here: every other eventproc command starts without it

    headers = {ACTOR_HEADER: actor()}
    if target.url is not None:
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        async with httpx.AsyncClient(
            base_url=target.url.rstrip("/"), headers=headers, timeout=TIMEOUT_SECONDS
        ) as http:
            yield AdminClient(http, target.url)
        return
    runtime = local_runtime(target.database_url)
    try:
        await _reach(runtime)
        from eventproc.http import create_app

        transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url=LOCAL_BASE, headers=headers, timeout=TIMEOUT_SECONDS
        ) as http:
            yield AdminClient(http, runtime.store.url_for_display, runtime)
    finally:
        await runtime.store.close()


async def _reach(runtime: "Runtime") -> None:
    """One round trip first: a database away (or refusing us) is exit 4, in its own words."""
    try:
        await runtime.store.ping()
    except StoreError as exc:
        where = runtime.store.url_for_display
        raise AdminError(f"cannot reach the database {where}: {exc}", UNREACHABLE) from None


def local_runtime(database_url: str | None) -> "Runtime":
    """A Runtime for the database (never started): no tokens, quiet logs, no LISTEN."""
    from eventproc import logs
    from eventproc.config import load_settings
    from eventproc.runtime import Runtime

    overrides: dict[str, Any] = {
        "api_token": None,
        "api_tokens": None,
        "api_tokens_file": None,
        "listen": False,
    }
    if database_url is not None:
        overrides["database_url"] = database_url
    if not os.environ.get("LOG_LEVEL"):
        overrides["log_level"] = "warning"  # the carrier's info lines would cut the progress bar
    try:
        settings = load_settings(**overrides)
        logs.configure(settings.log_level.value, settings.log_format.value)
        _check_sqlite_file(settings.effective_database_url)
        return Runtime(settings)
    except ConfigError as exc:
        raise AdminError(str(exc), USAGE) from None
    except EventprocError as exc:  # HANDLERS does not load
        raise AdminError(str(exc), USAGE) from None


def _check_sqlite_file(url: str) -> None:
    """A SQLite path that holds no file: unreachable (opening it would create an empty one)."""
    if not url.startswith("sqlite") or ":///" not in url:
        return
    path = url.split(":///", 1)[1].split("?", 1)[0]
    if path in ("", ":memory:") or Path(path).exists():
        return
    raise AdminError(
        f"no database at {path} (pass --database-url or --url, or run eventproc migrate)",
        UNREACHABLE,
    )
