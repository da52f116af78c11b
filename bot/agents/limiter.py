"""The agents' group budget: at most ``limit`` calls in any ``window`` seconds (Telegram: 20/min).

Every call the desk makes into the group (messages, edits, topic creation, pins, files)
takes a slot, so the desk never meets a 429 in normal operation. Two classes of call:

* urgent (answers to agents, escalations): may use every slot of the window;
* normal (the mirror, case cards): leave ``reserve`` slots free for urgent calls and are
  spread evenly (one per ``window / (limit - reserve)``), so lines show up every few
  seconds instead of in one burst followed by a minute of silence.

A slot is stamped when the call *ends*, so the server, which counts arrivals, always sees
at least ``window`` seconds between a call and the one ``limit`` calls later. A 429 from
Telegram blocks everything for its ``retry_after``.
"""

from __future__ import annotations

from collections import deque

from .ports import Clock, SystemClock


class GroupLimiter:
    def __init__(
        self,
        limit: int = 20,
        window: float = 60.0,
        *,
        clock: Clock | None = None,
        reserve: int = 2,
        spread: bool = True,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.reserve = max(0, min(reserve, limit - 1))
        self.spread = spread
        self.clock = clock or SystemClock()
        self._stamps: deque[float] = deque()
        self._blocked_until = 0.0
        self._last_normal = float("-inf")
        self.calls = 0
        self.retry_afters = 0

    @property
    def gap(self) -> float:
        return self.window / (self.limit - self.reserve) if self.spread else 0.0

    def _prune(self, now: float) -> None:
        while self._stamps and self._stamps[0] <= now - self.window:
            self._stamps.popleft()

    def delay(self, urgent: bool) -> float:
        """Seconds until a call of this class may start (0 = now)."""
        now = self.clock.now()
        self._prune(now)
        cap = self.limit if urgent else self.limit - self.reserve
        wait = self._blocked_until - now
        if len(self._stamps) >= cap:
            wait = max(wait, self._stamps[len(self._stamps) - cap] + self.window - now)
        if not urgent:
            wait = max(wait, self._last_normal + self.gap - now)
        return max(0.0, wait)

    def started(self, urgent: bool) -> None:
        if not urgent:
            self._last_normal = self.clock.now()

    def finished(self) -> None:
        """Stamp one call (whatever its outcome: the server counted its arrival)."""
        self.calls += 1
        self._stamps.append(self.clock.now())

    def block(self, seconds: float) -> None:
        self.retry_afters += 1
        self._blocked_until = max(self._blocked_until, self.clock.now() + seconds)

    def assume_spent(self) -> None:
        """Count the whole window as used just now (a new leader that cannot read what the
        previous one spent in its last minute waits one window)."""
        now = self.clock.now()
        self._stamps.extend([now] * max(0, self.limit - len(self._stamps)))

    def restore(self, ages: list[float]) -> None:
        """Count calls made ``ages`` seconds ago (by the previous leader, read from the
        database): a new leader continues with what is left of the window."""
        now = self.clock.now()
        for age in sorted(ages, reverse=True):
            if 0 <= age < self.window:
                self._stamps.append(now - age)

    def used(self) -> int:
        self._prune(self.clock.now())
        return len(self._stamps)
