"""Slowing down whoever guesses: failed log-ins and bad tokens, per client address."""

from __future__ import annotations

import time
from collections import deque

__all__ = ["FailureLimiter"]


class FailureLimiter:
    """A sliding window of failures per address. Kept per process: an attacker spread over
    processes gets at most ``limit`` tries a minute on each, still far too few to guess a
    password or a token."""

    def __init__(self, limit: int, window: float = 60.0, max_addresses: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def retry_after(self, address: str, now: float | None = None) -> float | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        now = time.monotonic() if now is None else now
        failures = self._recent(address, now)
        if failures is None or len(failures) < self.limit:
            return None
        return max(1.0, failures[0] + self.window - now)

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._failures) >= self.max_addresses and address not in self._failures:
            # Bounded memory: forget the oldest address rather than grow without end.
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(address, deque()).append(now)
