"""/admin/v1/tables: table health for the dashboard, from the shared reading.

The reading (eventproc.metrics_tables.TableWatch) reads the database's
statistics at most once per TABLE_HEALTH_MAX_AGE_SECONDS, whoever asks:
this endpoint, /health and /metrics together.
"""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from eventproc.admin.roles import Principal
from eventproc.errors import StoreUnavailable
from eventproc.http.admin.common import READ_RESPONSES, viewer
from eventproc.http.deps import get_runtime
from eventproc.http.schemas import OpenModel
from eventproc.store.table_health import TableHealth

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

router = APIRouter(prefix="/tables", tags=["admin: tables"])


class TableItem(OpenModel):
    table: str
    rows: int | None = Field(
        description="PostgreSQL: n_live_tup (an estimate); SQLite: counted, up to 1,000,000"
    )
    bytes: int | None = Field(description="With indexes and TOAST; null on SQLite")
    dead_tuples: int | None = Field(description="n_dead_tup; null on SQLite")
    last_autovacuum: datetime | None
    last_autoanalyze: datetime | None


class SqliteFile(OpenModel):
    file_bytes: int | None
    page_count: int | None
    freelist_pages: int | None


class TablesReport(OpenModel):
    figures_at: datetime = Field(description="When the shared reading was taken")
    backend: Literal["postgresql", "sqlite"]
    tables: list[TableItem]
    oldest_xact_age_seconds: float | None = Field(
        description="The oldest transaction or snapshot in this database holding back vacuum "
        "(a backend's or a prepared transaction's); 0 when none; null on SQLite"
    )
    replication_slot_xmin_age: int | None = Field(
        description="Transaction ids a replication slot holds vacuum back by; null when none"
    )
    claim_seconds: float = Field(
        description="The claim's pick (due, unleased, claim order, 20 rows) run read-only, timed"
    )
    pruning: bool = Field(description="PRUNE=on in this process")
    prune_lag_seconds: float | None = Field(
        description="Every row due for pruning this long ago is gone; null with PRUNE=off "
        "or before a first full pass"
    )
    prune_last_success_at: datetime | None = Field(
        description="When any worker last finished a pruning pass"
    )
    sqlite: SqliteFile | None


@router.get("", response_model=TablesReport, responses=READ_RESPONSES)
async def tables(request: Request, who: Annotated[Principal, Depends(viewer())]) -> TablesReport:
    """Rows, bytes and dead tuples per eventproc table; what holds vacuum back; prune lag."""
    runtime = get_runtime(request)
    health = await runtime.tables.read() if runtime.prepared else None
    if health is None:
        raise StoreUnavailable(runtime.processor.last_error or "table health unreadable")
    return report(runtime, health)


def report(runtime: "Runtime", health: TableHealth) -> TablesReport:
    oldest = health.oldest_xact_age_seconds
    if oldest is None and health.backend == "postgresql":
        oldest = 0.0
    return TablesReport(
        figures_at=health.at,
        backend="postgresql" if health.backend == "postgresql" else "sqlite",
        tables=[TableItem(**_fields(figures)) for figures in health.tables],
        oldest_xact_age_seconds=oldest,
        replication_slot_xmin_age=health.slot_xmin_age_xids,
        claim_seconds=health.claim_seconds,
        pruning=runtime.settings.prune,
        prune_lag_seconds=runtime.tables.prune_lag_seconds(health),
        prune_last_success_at=health.prune_succeeded_at,
        sqlite=None
        if health.backend == "postgresql"
        else SqliteFile(
            file_bytes=health.file_bytes,
            page_count=health.page_count,
            freelist_pages=health.freelist_pages,
        ),
    )


def summary(runtime: "Runtime", health: TableHealth) -> dict[str, Any]:
    """/health's small ``tables`` key: the figures an alert or a glance needs."""
    full = report(runtime, health)
    return {
        "figuresAt": full.figures_at.isoformat(),
        "rows": {item.table: item.rows for item in full.tables if item.table in _HOT},
        "deadTuples": sum(item.dead_tuples or 0 for item in full.tables)
        if health.backend == "postgresql"
        else None,
        "oldestXactAgeSeconds": full.oldest_xact_age_seconds,
        "claimSeconds": round(full.claim_seconds, 6),
        "pruning": full.pruning,
        "pruneLagSeconds": full.prune_lag_seconds,
    }


_HOT = frozenset({"events", "event_deliveries", "event_attempts", "event_dead_letters"})


def _fields(figures: Any) -> dict[str, Any]:
    return {
        "table": figures.table,
        "rows": figures.rows,
        "bytes": figures.bytes,
        "dead_tuples": figures.dead_tuples,
        "last_autovacuum": figures.last_autovacuum,
        "last_autoanalyze": figures.last_autoanalyze,
    }
