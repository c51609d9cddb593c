"""A budget of log lines, for one source that may write many (a lease session's takes and releases).

Up to ``limit`` lines every ``period`` seconds; the lines past that are counted, and one line sums them up
(how many, the first and last left out) once the period is over, at the next line or at ``close()``.
"""

from __future__ import annotations

import logging
import time


class LogQuota:
    def __init__(self, logger: logging.Logger, what: str, *, limit: int = 500, period: float = 10.0) -> None:
        """``what``: the lines' subject, for the summary ("lease lines of this session")."""
        self.logger, self.what, self.limit, self.period = logger, what, limit, period
        self._start, self._written, self._left_out = time.monotonic(), 0, 0
        self._first = self._last = ""

    def info(self, message: str, *args: object) -> None:
        """Log ``message % args`` at INFO if the budget allows, else count it."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        now = time.monotonic()
        if now - self._start >= self.period:
            self.close()
            self._start, self._written = now, 0
        if self._written < self.limit:
            self._written += 1
            self.logger.info(message, *args)
            return
        line = message % args
        if not self._left_out:
            self._first = line
        self._left_out += 1
        self._last = line

    def close(self) -> None:
        """Sum up the lines left out so far, if any."""
        if self._left_out:
            self.logger.info(
                "%d %s left out (more than %d in %g s): the first %r, the last %r",
                self._left_out,
                self.what,
                self.limit,
                self.period,
                self._first,
                self._last,
            )
            self._left_out = 0
