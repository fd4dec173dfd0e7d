"""The admin API's dead-letter reads: a filtered list, one with its traceback, and groups.

(Being built for issue 15.)
"""

from eventproc.store.driver import Driver


class DeadLetterReads:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver
