"""A circuit breaker for the adapters: after ``failures`` calls in a row
fail with the node unreachable (or past their deadline), calls are refused
at once for ``cooldown`` seconds, then one is let through to probe."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from .. import PagodaError

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Codes that say the node, not the request, is in trouble.
TRIPPING = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


class Breaker:
    def __init__(self, failures: int = 3, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._row = 0
        self._open_until = 0.0
        self.trips = 0

    @property
    def open(self) -> bool:
        with self._lock:
            return self._clock() < self._open_until

    def call(self, fn: Callable[[], T], fallback: T) -> T:
        """``fn()``, or ``fallback`` while open or when ``fn`` fails: an
        engine's storage hook never raises (a failed load is a miss, the
        engine recomputes). A tripping error counts toward opening; others
        are logged."""
        if self.open:
            return fallback
        try:
            result = fn()
        except PagodaError as error:
            if error.name not in TRIPPING:
                logger.warning("Pagoda call failed: %s", error)
                return fallback
            with self._lock:
                self._row += 1
                if self._row >= self.failures:
                    self._open_until = self._clock() + self.cooldown
                    self._row = 0
                    self.trips += 1
            return fallback
        with self._lock:
            self._row = 0
        return result
