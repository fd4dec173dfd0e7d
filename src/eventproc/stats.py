"""In-process counters behind ``/health`` (the seed's ``stats`` object)."""

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(slots=True)
class Stats:
    """Counts handled attempts; ``total_processed`` is the sum of the other three."""

    total_processed: int = 0
    success_count: int = 0
    error_count: int = 0
    dead_letter_count: int = 0
    skipped_count: int = 0
    last_processed_at: datetime | None = None

    def record(
        self, *, succeeded: int = 0, failed: int = 0, dead: int = 0, skipped: int = 0
    ) -> None:
        handled = succeeded + failed + dead + skipped
        if not handled:
            return
        self.success_count += succeeded + skipped
        self.skipped_count += skipped
        self.error_count += failed
        self.dead_letter_count += dead
        self.total_processed += handled
        self.last_processed_at = datetime.now(UTC)

    def as_seed_json(self) -> dict[str, object]:
        return {
            "totalProcessed": self.total_processed,
            "successCount": self.success_count,
            "errorCount": self.error_count,
            "deadLetterCount": self.dead_letter_count,
            "lastProcessedAt": (
                self.last_processed_at.isoformat().replace("+00:00", "Z")
                if self.last_processed_at
                else None
            ),
        }
