"""How the connections one process may open are shared out.

``DATABASE_POOL_SIZE`` caps everything one eventproc process opens to
PostgreSQL: SQLAlchemy's pool (publishing, transactional handlers, replays,
migrations, the HTTP API's reads), the raw hot-path connections (claims,
write-backs, renewals) and the LISTEN connection. Nothing overflows: past
the cap a caller waits for a connection (bounded by ``POOL_TIMEOUT_SECONDS``,
then StoreUnavailable, which reschedules a handler's event without spending
its attempt).
"""

from dataclasses import dataclass

from eventproc.errors import ConfigError

MOST_HOT = 4  # more hot connections did not drain faster (claims and write-backs are short)
LEAST_POOLED = 2  # a migration holds its lease row on one connection while it works on another
POOL_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Footprint:
    pooled: int
    hot: int
    listener: int

    @property
    def total(self) -> int:
        return self.pooled + self.hot + self.listener

    @classmethod
    def of(cls, size: int, *, listen: bool) -> "Footprint":
        """Share ``size`` out: one for LISTEN, a quarter hot (1 to 4), the rest pooled."""
        listener = 1 if listen else 0
        hot = max(1, min(MOST_HOT, (size - listener) // 4))
        pooled = size - listener - hot
        if pooled < LEAST_POOLED:
            least = LEAST_POOLED + 1 + listener
            why = " (2 pooled, 1 for claims and write-backs, 1 for LISTEN)" if listen else ""
            raise ConfigError(
                f"DATABASE_POOL_SIZE={size} is too small: eventproc needs at least {least}{why}"
            )
        return cls(pooled=pooled, hot=hot, listener=listener)
