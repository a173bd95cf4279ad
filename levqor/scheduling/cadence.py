"""When a schedule ticks: a standard five-field cron expression in an IANA time zone (evaluated by
`cronsim`, DST included), or every N seconds from an anchor. Every instant here is aware; ticks are
answered in UTC."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

CRON_FIELDS = 5
# Five fields of the characters cron syntax uses (digits, names such as MON and JAN, * , - / and
# cronsim's L, W and #), one space apart; cronsim then checks each field's values.
CRON_PATTERN = r"^[0-9A-Za-z*,/#?-]{1,40}(?: [0-9A-Za-z*,/#?-]{1,40}){4}$"
MAX_EVERY_S = 366 * 24 * 3600  # a year (leap) between fires; longer is a typo, not a schedule
MAX_LISTED_TICKS = 1000  # the most ticks one catch-up walks through


@functools.cache
def time_zones() -> tuple[str, ...]:
    """The IANA names this server knows, sorted (the JSON Schema enum of `timezone`)."""
    return tuple(sorted(available_timezones()))


def zone(name: str) -> ZoneInfo:
    if name not in time_zones():
        raise ValueError(f"'{name[:64]}' is not an IANA time zone name (e.g. UTC, Europe/London)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # pragma: no cover - listed but unreadable
        raise ValueError(f"'{name[:64]}' is not an IANA time zone this server can read") from None


def check_cron(expression: str) -> str:
    """The expression if cronsim reads it as five fields that fire at some time; ValueError naming
    what is wrong otherwise."""
    if len(expression.split()) != CRON_FIELDS or expression != " ".join(expression.split()):
        raise ValueError("must be five fields (minute hour day-of-month month day-of-week), one space apart")
    try:
        next(iter(CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))))
    except CronSimError as exc:
        raise ValueError(f"is not a cron expression: {str(exc).lower()}") from None
    except StopIteration:  # pragma: no cover - cronsim refuses impossible dates itself
        raise ValueError("never fires") from None
    return expression


@dataclass(frozen=True, slots=True)
class Cadence:
    """A cron expression in a zone, or an interval from an anchor."""

    cron: str | None
    every_s: int | None
    timezone: str
    anchor_at: datetime

    def ticks_after(self, after: datetime) -> Iterator[datetime]:
        """The ticks strictly after `after`, in order, in UTC."""
        if self.every_s is not None:
            step = timedelta(seconds=self.every_s)
            start = 1 if after < self.anchor_at else int((after - self.anchor_at) // step) + 1
            return (self.anchor_at + step * k for k in itertools.count(start))
        assert self.cron is not None
        local = after.astimezone(zone(self.timezone))
        return (
            tick.astimezone(UTC)
            for tick in CronSim(self.cron, local.replace(microsecond=0))
            if tick.astimezone(UTC) > after
        )

    def count_before(self, first: datetime, end: datetime) -> tuple[int, datetime | None]:
        """How many ticks, from the tick `first` on, fall before `end`, and the last of them.
        Counted for an interval; for cron, walked up to MAX_LISTED_TICKS (a floor past that)."""
        if first >= end:
            return 0, None
        if self.every_s is not None:
            step = timedelta(seconds=self.every_s)
            count = -((first - end) // step)  # ceil((end - first) / step)
            return count, first + step * (count - 1)
        count, tick = 0, first
        while tick < end and count < MAX_LISTED_TICKS:
            count += 1
            tick = self.next_after(tick)
        return count, self.last_before(end)

    def last_before(self, end: datetime) -> datetime:
        """The last tick before `end` (a cron schedule's)."""
        assert self.cron is not None
        start = end.replace(microsecond=0)
        if start != end:
            start += timedelta(seconds=1)  # cronsim's reverse walk starts before a whole second
        local = start.astimezone(zone(self.timezone))
        return next(iter(CronSim(self.cron, local, reverse=True))).astimezone(UTC)

    def next_after(self, after: datetime) -> datetime:
        return next(self.ticks_after(after))

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        return list(itertools.islice(self.ticks_after(after), count))


def interval_anchor(now: datetime) -> datetime:
    """Interval ticks fall on whole seconds, counted from the second the cadence was set."""
    return now.replace(microsecond=0)
