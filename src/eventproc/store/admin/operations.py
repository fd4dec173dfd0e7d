"""Bulk operations' rows: plan, execute (freeze the items), carry on in batches, cancel.

(Being built for issue 15.)
"""

from collections.abc import Callable

from eventproc.store.driver import Driver


class OperationRows:
    def __init__(self, driver: Driver, wake: Callable[[], None]) -> None:
        self.driver = driver
        self._wake = wake
