"""Business hours: when a person from the team can answer (``BUSINESS_HOURS`` in a
``BUSINESS_TZ`` time zone, parsed by ``bot.config``). Outside them a request for a person is
answered with when someone will reply (the human_agent flow's ``team_hours`` action), and a
pause that expires over an unanswered message tells the customer the same.

``BusinessHours(windows, tz)``: ``windows`` are (weekday 0=Monday, start minute, end minute)
in local time; none at all means "always open".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class BusinessHours:
    windows: tuple[tuple[int, int, int], ...] = ()
    tz: str = "UTC"

    @property
    def always(self) -> bool:
        return not self.windows

    def _local(self, ts: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(ts, ZoneInfo(self.tz))

    def is_open(self, ts: float) -> bool:
        if self.always:
            return True
        t = self._local(ts)
        minute = t.hour * 60 + t.minute
        return any(day == t.weekday() and start <= minute < end for day, start, end in self.windows)

    def next_open(self, ts: float) -> dt.datetime | None:
        """The next opening (local time) after ``ts``; None when open now or always."""
        if self.is_open(ts):
            return None
        t = self._local(ts)
        for ahead in range(8):
            day = (t + dt.timedelta(days=ahead)).date()
            starts = sorted(s for d, s, _ in self.windows if d == day.weekday())
            for start in starts:
                at = dt.datetime.combine(day, dt.time(start // 60, start % 60), ZoneInfo(self.tz))
                if at > t:
                    return at
        return None

    def describe_next(self, ts: float) -> str:
        """ "Monday 09:00 (Europe/Berlin)", or "" when open now."""
        at = self.next_open(ts)
        if at is None:
            return ""
        return f"{DAYS[at.weekday()]} {at:%H:%M} ({self.tz})"
