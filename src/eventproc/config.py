"""Settings: the only code that reads the environment or ``.env``.

Components never see this class; they take the small frozen configs that
``Settings`` builds (``processor_config()`` and friends), so tests can build
them directly.
"""

import enum
import ipaddress
import re
from pathlib import Path
from typing import Any, Self

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventproc.admin.redaction import RedactionError, parse_paths
from eventproc.admin.roles import TokenBook, TokenError
from eventproc.errors import ConfigError
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.store.postgres.url import PgUrl, Pooler, UrlError
from eventproc.store.retention import RetentionPolicy

DEFAULT_SQLITE_PATH = "eventproc.db"
# POLL_INTERVAL_MS's default behind a transaction pooler, where LISTEN cannot
# wake workers: pickups within about a second, one cheap claim a second when idle.
TRANSACTION_POOLER_POLL_MS = 1000
# Settings whose value is never repeated in an error (it may hold a password).
SECRET = frozenset({"database_url", "api_token", "api_tokens"})
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


class Refused(ValueError):
    """A value refused with a message that is already the whole line (no 'NAME=value:' prefix)."""


class Ordering(enum.StrEnum):
    AGGREGATE = "aggregate"
    NONE = "none"


class AggregateFailure(enum.StrEnum):
    BLOCK = "block"
    PARK = "park"


class LogFormat(enum.StrEnum):
    AUTO = "auto"
    JSON = "json"
    TEXT = "text"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    WARN = "warn"
    ERROR = "error"
    CRITICAL = "critical"


class Settings(BaseSettings):
    """Every environment variable eventproc reads, its default and its bounds."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
    )

    # Seed names, seed defaults.
    port: int = Field(8080, ge=0, le=65535)  # 0: any free port (logged once listening)
    poll_interval_ms: int = Field(10_000, ge=10, le=3_600_000)
    batch_size: int = Field(20, ge=1, le=10_000)
    max_retries: int = Field(5, ge=1, le=1000)
    enable_polling: bool = True
    log_level: LogLevel = LogLevel.INFO
    environment: str = Field(
        "development", validation_alias=AliasChoices("ENVIRONMENT", "NODE_ENV")
    )

    # Database.
    database_url: str | None = None
    supabase_url: str | None = None
    # The most PostgreSQL connections one process opens, all kinds counted
    # (store/postgres/footprint.py; README "Connections per process").
    database_pool_size: int = Field(20, ge=3, le=1000)
    # What stands between eventproc and PostgreSQL; ?pgbouncer=true in
    # DATABASE_URL means transaction. README "Using it with Supabase".
    pooler: Pooler = Pooler.NONE

    # Processing.
    concurrency: int = Field(50, ge=1, le=10_000)
    claims_at_once: int = Field(2, ge=1, le=16)
    # None: on with ORDERING=none, off with ORDERING=aggregate (see effective_async_commit).
    async_commit: bool | None = None
    lease_seconds: float = Field(30.0, ge=1, le=86_400)
    handler_timeout_seconds: float = Field(60.0, gt=0, le=86_400)
    retry_base_ms: int = Field(1000, ge=0, le=86_400_000)
    retry_max_ms: int = Field(300_000, ge=0, le=86_400_000)
    ordering: Ordering = Ordering.AGGREGATE
    # park: the replaced service's behaviour (a dead letter never holds back
    # later events); block is the opt-in for aggregates that must stop.
    aggregate_failure: AggregateFailure = AggregateFailure.PARK
    blocked_aggregate_max_age_seconds: float = Field(300.0, ge=0, le=31_536_000)
    listen: bool = True
    shutdown_grace_seconds: float = Field(25.0, ge=0, le=3600)
    worker_id: str | None = Field(None, max_length=80)

    # Wiring and surface.
    handlers: str = "yachtparty:registry"
    host: str = "127.0.0.1"
    api_token: str | None = None  # one admin token (as before API_TOKENS)
    # Tokens with roles: "viewer:T1,operator:T2,admin:T3" (or role:name:token),
    # and/or a file of "role name token" lines (eventproc.admin.roles).
    api_tokens: str | None = None
    api_tokens_file: Path | None = None
    # Payload and metadata paths viewers see as "[redacted]" (eventproc.admin.redaction).
    redact_paths: str = ""
    allow_unauthenticated: bool = False
    log_format: LogFormat = LogFormat.AUTO
    # How old a shared reading of the backlog figures may be when served: /health,
    # /health/ready and /metrics (stats) and the admin API's handler list (figures);
    # any number of callers within it cost one reading (eventproc.shared_reading). 0: none kept.
    stats_max_age_seconds: float = Field(1.0, ge=0, le=60)
    handler_figures_max_age_seconds: float = Field(5.0, ge=0, le=300)
    # Retention (README "Retention"): off by default, as the replaced service
    # kept every row; PRUNE=on removes what the RETAIN_* clocks let go.
    prune: bool = False
    prune_interval_seconds: float = Field(300.0, ge=1, le=86_400)
    retain_succeeded_days: float = Field(7.0, ge=0, le=36_500)
    retain_skipped_days: float = Field(7.0, ge=0, le=36_500)
    retain_dead_lettered_days: float = Field(30.0, ge=0, le=36_500)
    retain_partial_days: float = Field(30.0, ge=0, le=36_500)
    retain_attempts_days: float = Field(30.0, ge=0, le=36_500)
    retain_audit_days: float = Field(365.0, ge=1, le=36_500)
    retain_handler_days: str = ""  # "handler_a:3,handler_b:60"
    prune_archive: str = "none"  # none | table | jsonl:/path/to/file.jsonl
    # How old the shared table-health reading (/metrics, /health, /admin/v1/tables) may be.
    table_health_max_age_seconds: float = Field(15.0, ge=0, le=3600)
    # Largest request body the HTTP API reads: a bigger one is refused (413) as it arrives.
    max_body_bytes: int = Field(65_536, ge=1024, le=67_108_864)

    @field_validator(
        "log_level", "log_format", "ordering", "aggregate_failure", "pooler", mode="before"
    )
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        """Node users write LOG_LEVEL=INFO as often as info: every enum setting takes any case."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not _is_address_or_host_name(value):
            raise Refused(f"HOST={value!r} is not an IP address or host name")
        return value

    @model_validator(mode="after")
    def _check_retry_bounds(self) -> Self:
        if self.retry_max_ms < self.retry_base_ms:
            default = "" if "retry_max_ms" in self.model_fields_set else " (the default)"
            raise Refused(
                f"RETRY_MAX_MS={self.retry_max_ms}{default} is below "
                f"RETRY_BASE_MS={self.retry_base_ms}: the longest backoff cannot be shorter "
                "than the first; raise RETRY_MAX_MS or lower RETRY_BASE_MS"
            )
        return self

    @field_validator("handlers")
    @classmethod
    def _check_handlers(cls, value: str) -> str:
        module, _, attr = value.partition(":")
        if not module or not all(part.isidentifier() for part in module.split(".")):
            raise ValueError("must look like 'package.module' or 'package.module:name'")
        if attr and not attr.isidentifier():
            raise ValueError("the part after ':' must be a Python name")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        schemes = ("postgresql", "postgres", "sqlite")
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in schemes:
            raise ValueError("must start with postgresql:// (or postgres://) or sqlite:///")
        if scheme != "sqlite":
            try:
                PgUrl.parse(value)  # every parameter checked now, not at the first connect
            except UrlError as exc:
                raise Refused(f"DATABASE_URL: {exc}") from None
        return value

    @model_validator(mode="after")
    def _apply_pooler(self) -> Self:
        """POOLER and the URL's pgbouncer= agree; a transaction pooler changes two defaults.

        LISTEN cannot work through a transaction pooler (the LISTEN runs on
        whichever server connection the pooler lends, and is left behind
        there), so it is off and polling is faster unless they are set.
        """
        if self.database_url is None or self.database_url.startswith("sqlite"):
            if self.pooler is not Pooler.NONE:
                raise Refused(f"POOLER={self.pooler} needs a PostgreSQL DATABASE_URL")
            return self
        url = PgUrl.parse(self.database_url)
        if "pooler" not in self.model_fields_set:
            self.pooler = url.mode
        try:
            url.behind(self.pooler)
        except UrlError as exc:
            raise Refused(f"DATABASE_URL: {exc}") from None
        if self.pooler is Pooler.TRANSACTION:
            if self.async_commit:
                raise Refused(
                    "ASYNC_COMMIT=true cannot work through a transaction pooler "
                    "(POOLER=transaction keeps no session setting such as synchronous_commit): "
                    "unset it; every commit then waits for the WAL flush"
                )
            if "listen" not in self.model_fields_set:
                self.listen = False
            if "poll_interval_ms" not in self.model_fields_set:
                self.poll_interval_ms = TRANSACTION_POOLER_POLL_MS
        return self

    @field_validator("retain_handler_days")
    @classmethod
    def _check_handler_days(cls, value: str) -> str:
        parse_handler_days(value)
        return value

    @field_validator("prune_archive")
    @classmethod
    def _check_archive(cls, value: str) -> str:
        _, path = parse_archive(value)
        if path is not None and not path.parent.is_dir():
            raise Refused(f"PRUNE_ARCHIVE={value!r}: directory {str(path.parent)!r} does not exist")
        return value

    def retention_policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            succeeded_days=self.retain_succeeded_days,
            skipped_days=self.retain_skipped_days,
            dead_lettered_days=self.retain_dead_lettered_days,
            partial_days=self.retain_partial_days,
            attempts_days=self.retain_attempts_days,
            audit_days=self.retain_audit_days,
            handler_days=parse_handler_days(self.retain_handler_days),
            block_on_dead_letters=self.aggregate_failure is AggregateFailure.BLOCK,
            archive=parse_archive(self.prune_archive)[0],
        )

    @property
    def archive_path(self) -> Path | None:
        return parse_archive(self.prune_archive)[1]

    @property
    def is_production(self) -> bool:
        return self.environment.lower() in {"production", "prod"}

    @property
    def effective_async_commit(self) -> bool:
        """ASYNC_COMMIT, or by default: only where no order between events is promised.

        With ORDERING=aggregate, an event's completion and its successor's
        claim could both be forgotten by a database crash after the
        successor's handler ran; the event would then run again after its
        successor. Waiting for the flush rules that out. Behind a transaction
        pooler no session setting holds, so every commit waits
        (ASYNC_COMMIT=true is refused there).
        """
        if self.async_commit is not None:
            return self.async_commit
        return self.ordering is Ordering.NONE and self.pooler is not Pooler.TRANSACTION

    @property
    def effective_database_url(self) -> str:
        """The URL to open: DATABASE_URL, or a SQLite file in the working directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(DEFAULT_SQLITE_PATH).resolve()}"

    def processor_config(self) -> ProcessorConfig:
        return ProcessorConfig(
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            claims_at_once=self.claims_at_once,
            poll_interval_ms=self.poll_interval_ms,
            lease_seconds=self.lease_seconds,
            handler_timeout_seconds=self.handler_timeout_seconds,
            polling_enabled=self.enable_polling,
            listen=self.listen,
            ordered=self.ordering is Ordering.AGGREGATE,
            park_failed_aggregates=self.aggregate_failure is AggregateFailure.PARK,
            shutdown_grace_seconds=self.shutdown_grace_seconds,
            retry=RetryPolicy(
                max_retries=self.max_retries,
                base_ms=self.retry_base_ms,
                max_ms=self.retry_max_ms,
            ),
        )

    def check_bind(self) -> None:
        """Refuse to serve mutating endpoints to a network with no token."""
        if self.has_tokens or self.allow_unauthenticated or _is_loopback(self.host):
            return
        raise ConfigError(
            f"HOST={self.host} is not a loopback address and no API token is set: "
            "set API_TOKEN or API_TOKENS (recommended) or ALLOW_UNAUTHENTICATED=true"
        )

    @property
    def has_tokens(self) -> bool:
        return bool(self.api_token or self.api_tokens or self.api_tokens_file)

    def token_book(self) -> TokenBook:
        """The tokens, read and checked (a bad entry: ConfigError naming it)."""
        try:
            return TokenBook.from_settings(self.api_token, self.api_tokens, self.api_tokens_file)
        except TokenError as exc:
            raise ConfigError(str(exc)) from None

    def redaction(self) -> tuple[tuple[str, ...], ...]:
        try:
            return parse_paths(self.redact_paths)
        except RedactionError as exc:
            raise ConfigError(str(exc)) from None


def parse_handler_days(value: str) -> dict[str, float]:
    """RETAIN_HANDLER_DAYS: "name:days,name:days" (days 0 to 36500)."""
    found: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, days = item.rpartition(":")
        try:
            number = float(days)
        except ValueError:
            number = -1.0
        if not sep or not name.strip() or not 0 <= number <= 36_500:
            raise Refused(
                f"RETAIN_HANDLER_DAYS: {item!r} is not handler:days (days from 0 to 36500)"
            )
        found[name.strip()] = number
    return found


def parse_archive(value: str) -> tuple[str, Path | None]:
    """PRUNE_ARCHIVE: none, table, or jsonl:/path."""
    text = value.strip()
    if text.lower() in ("none", "table"):
        return text.lower(), None
    if text.lower().startswith("jsonl:") and text[6:].strip():
        return "jsonl", Path(text[6:].strip()).expanduser()
    raise Refused(f"PRUNE_ARCHIVE={value!r}: must be none, table or jsonl:/path/to/file")


def _is_address_or_host_name(host: str) -> bool:
    """An IPv4/IPv6 address, or a DNS name (labels of letters, digits, '-' and '_')."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        name = host[:-1] if host.endswith(".") else host
        return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(p) for p in name.split("."))
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment; any problem becomes one ConfigError line."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    if settings.supabase_url and not settings.database_url:
        raise ConfigError(
            "SUPABASE_URL is set but DATABASE_URL is not: eventproc talks to Postgres "
            "directly. Set DATABASE_URL to your project's connection string "
            "(Project Settings > Database: direct, or session mode with POOLER=session, "
            "port 5432; the transaction pooler on port 6543 needs POOLER=transaction "
            "and works without LISTEN)."
        )
    return settings


def _describe(exc: ValidationError) -> str:
    """One line for every problem, naming the variable; secrets are not repeated."""
    problems = []
    for error in exc.errors():
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, Refused):
            problems.append(str(cause))
            continue
        field = str(error["loc"][0]) if error["loc"] else "settings"
        given = "<hidden>" if field in SECRET else repr(error.get("input"))
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{field.upper()}={given}: {message}")
    return "Invalid configuration: " + "; ".join(problems)
