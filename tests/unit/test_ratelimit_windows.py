"""The in-process sliding window counters behind `memory://` rate limits, at chosen instants."""

from __future__ import annotations

from levqor.http.ratelimit_counters import LocalWindows

LIMIT = 10
WINDOW_S = 60
KEY = ("ip", "192.0.2.1", LIMIT, WINDOW_S)
WINDOW_START = 6000.0  # a multiple of WINDOW_S: the start of a window


def test_counts_down_then_refuses_without_charging() -> None:
    windows = LocalWindows()
    remaining = [windows.charge(KEY, LIMIT, WINDOW_S, 1, WINDOW_START + 10).remaining for _ in range(LIMIT)]
    assert remaining == list(range(LIMIT - 1, -1, -1))
    refused = windows.charge(KEY, LIMIT, WINDOW_S, 1, WINDOW_START + 10)
    assert not refused.allowed
    assert (refused.limit, refused.remaining) == (LIMIT, 0)
    # The window turns 50 s later; a refused request is not counted, so this changes nothing.
    assert refused.reset_s == 50
    assert windows.charge(("ip", "192.0.2.2", LIMIT, WINDOW_S), LIMIT, WINDOW_S, 1, WINDOW_START + 10).allowed


def test_the_previous_window_weighs_by_its_overlap() -> None:
    windows = LocalWindows()
    for _ in range(LIMIT):
        assert windows.charge(KEY, LIMIT, WINDOW_S, 1, WINDOW_START + 10).allowed
    # 32 s into the next window, 28/60 of the previous one still overlaps: 10 * 28/60 = 4.67 count.
    verdict = windows.charge(KEY, LIMIT, WINDOW_S, 1, WINDOW_START + WINDOW_S + 32)
    assert verdict.allowed
    assert verdict.remaining == LIMIT - 5  # floor(4.67 + 1)
    # One of the 10 earlier requests slides out of the moving window every 6 s: the next in 4 s.
    assert verdict.reset_s == 4


def test_a_cost_over_what_is_left_is_refused_whole() -> None:
    windows = LocalWindows()
    assert windows.charge(KEY, LIMIT, WINDOW_S, 8, WINDOW_START).remaining == 2
    refused = windows.charge(KEY, LIMIT, WINDOW_S, 3, WINDOW_START)
    assert not refused.allowed
    assert refused.remaining == 2
    assert not windows.charge(KEY, LIMIT, WINDOW_S, LIMIT + 1, WINDOW_START + 10 * WINDOW_S).allowed


def test_counts_two_windows_old_are_forgotten() -> None:
    windows = LocalWindows()
    for _ in range(LIMIT):
        windows.charge(KEY, LIMIT, WINDOW_S, 1, WINDOW_START)
    later = windows.charge(KEY, LIMIT, WINDOW_S, 1, WINDOW_START + 2 * WINDOW_S + 1)
    assert later.allowed
    assert later.remaining == LIMIT - 1
