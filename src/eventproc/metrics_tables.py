"""Table health as Prometheus metrics, and the shared reading behind them.

A scrape, /health and GET /admin/v1/tables all read :class:`TableWatch`,
which reads the database's statistics at most once per
TABLE_HEALTH_MAX_AGE_SECONDS (eventproc.shared_reading): a dashboard and a
scraper together cost one reading. The collector only reports the latest
reading (collect() cannot wait for the database); the /metrics route
refreshes it first.
"""

import asyncio
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventproc.admin.pruner import Pruner
from eventproc.errors import StoreError
from eventproc.shared_reading import SharedReadings
from eventproc.store import table_health
from eventproc.store.driver import Driver
from eventproc.store.errors import translating
from eventproc.store.table_health import TableHealth

READ_TIMEOUT_SECONDS = 2.0


class TableWatch(Collector):
    def __init__(self, driver: Driver, pruner: Pruner, *, max_age: float, pruning: bool) -> None:
        self.driver = driver
        self.pruner = pruner
        self.pruning = pruning  # PRUNE=on: prune lag has a meaning
        self.latest: TableHealth | None = None
        self._readings = SharedReadings[TableHealth](max_age)

    async def read(self) -> TableHealth | None:
        """The shared reading; None (and the last one kept for the gauges) when unreadable."""
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                self.latest = await self._readings.get("tables", self._read)
        except (StoreError, TimeoutError, OSError):
            return None
        return self.latest

    async def _read(self) -> TableHealth:
        async with translating():
            return await table_health.read(self.driver)

    def prune_lag_seconds(self, health: TableHealth) -> float | None:
        """How far behind pruning is: every row due this many seconds ago is gone."""
        if not self.pruning or health.prune_pass_started_at is None:
            return None
        return max((health.at - health.prune_pass_started_at).total_seconds(), 0.0)

    def collect(self) -> Iterator[Metric]:
        pruned = CounterMetricFamily(
            "eventproc_pruned_rows",
            "Rows the pruner removed (or archived) in this process, per table.",
            labels=["table"],
        )
        for table, rows in sorted(self.pruner.totals.items()):
            pruned.add_metric([table], rows)
        yield pruned
        yield CounterMetricFamily(
            "eventproc_prune_deferred_seconds",
            "Time this process's pruner waited before its batches while the claims were behind.",
            value=self.pruner.deferred_seconds,
        )
        health = self.latest
        if health is None:
            return
        yield from self._per_table(health)
        yield from self._singles(health)

    def _per_table(self, health: TableHealth) -> Iterator[Metric]:
        rows = GaugeMetricFamily(
            "eventproc_table_rows",
            "Rows per eventproc table (PostgreSQL: n_live_tup; SQLite: counted up to 1e6).",
            labels=["table"],
        )
        size = GaugeMetricFamily(
            "eventproc_table_bytes",
            "Bytes per table with its indexes and TOAST (PostgreSQL only).",
            labels=["table"],
        )
        dead = GaugeMetricFamily(
            "eventproc_table_dead_tuples",
            "Dead tuples per table waiting for vacuum (PostgreSQL: n_dead_tup).",
            labels=["table"],
        )
        for figures in health.tables:
            if figures.rows is not None:
                rows.add_metric([figures.table], figures.rows)
            if figures.bytes is not None:
                size.add_metric([figures.table], figures.bytes)
            if figures.dead_tuples is not None:
                dead.add_metric([figures.table], figures.dead_tuples)
        yield from (rows, size, dead)

    def _singles(self, health: TableHealth) -> Iterator[Metric]:
        def gauge(name: str, documentation: str, value: float | None) -> Iterator[Metric]:
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=value)

        yield from gauge(
            "eventproc_oldest_xact_age_seconds",
            "Age of the oldest transaction or snapshot in this database holding back vacuum "
            "(0 when none; PostgreSQL only).",
            0.0
            if health.backend == "postgresql" and health.oldest_xact_age_seconds is None
            else health.oldest_xact_age_seconds,
        )
        yield from gauge(
            "eventproc_claim_seconds",
            "Time of the claim's pick (due, unleased, claim order, 20 rows) run read-only.",
            health.claim_seconds,
        )
        yield from gauge(
            "eventproc_prune_lag_seconds",
            "Every row retention says should be gone that long ago is gone (PRUNE=on only).",
            self.prune_lag_seconds(health),
        )
        succeeded = health.prune_succeeded_at
        yield from gauge(
            "eventproc_prune_last_success_timestamp_seconds",
            "When any worker's pruner last finished a pass (unix time).",
            None if succeeded is None else succeeded.timestamp(),
        )
        yield from gauge(
            "eventproc_sqlite_file_bytes", "Size of the SQLite file.", health.file_bytes
        )
        yield from gauge(
            "eventproc_sqlite_freelist_pages",
            "Free pages inside the SQLite file (reused, or returned by incremental vacuum).",
            None if health.freelist_pages is None else float(health.freelist_pages),
        )
