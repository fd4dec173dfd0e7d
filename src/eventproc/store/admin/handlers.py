"""Per-subscription figures (backlog, due, in flight, rates, durations), workers, pauses.

(Being built for issue 15.)
"""

from eventproc.store.driver import Driver


class HandlerReads:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver
