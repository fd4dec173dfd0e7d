"""Prometheus collectors, defined once per runtime (tests build several)."""

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "eventproc_events",
            "Handled event attempts by type and outcome.",
            ["event_type", "outcome"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "eventproc_handler_duration_seconds",
            "Handler run time.",
            ["event_type"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
            registry=self.registry,
        )
        self.claimed = Counter(
            "eventproc_claimed_events",
            "Events claimed by this process.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "eventproc_in_flight",
            "Events claimed by this process and not yet handled.",
            registry=self.registry,
        )
        self.store_errors = Counter(
            "eventproc_store_errors",
            "Database operations that failed, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.backlog = Gauge(
            "eventproc_backlog",
            "Pending events (at the last scrape).",
            registry=self.registry,
        )
        self.oldest_pending_seconds = Gauge(
            "eventproc_oldest_pending_seconds",
            "Age of the oldest pending event (at the last scrape).",
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "eventproc_dead_letters",
            "Rows in event_dead_letters (at the last scrape).",
            registry=self.registry,
        )
        # labels() hashes and validates its arguments on every call; a busy
        # worker counts every event, so the children are looked up once.
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def count(self, event_type: str, outcome: str) -> None:
        """One handled attempt of ``event_type`` ended in ``outcome``."""
        child = self._outcomes.get((event_type, outcome))
        if child is None:
            child = self._outcomes[event_type, outcome] = self.events.labels(event_type, outcome)
        child.inc()

    def observe_handler(self, event_type: str, seconds: float) -> None:
        """How long one successful handler call of ``event_type`` took."""
        child = self._durations.get(event_type)
        if child is None:
            child = self._durations[event_type] = self.handler_seconds.labels(event_type)
        child.observe(seconds)
