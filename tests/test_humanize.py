"""Numbers for humans (scheduler.humanize): one format, each a table of cases."""

from __future__ import annotations

import pytest

from scheduler import humanize

NOW = 1_780_000_000.0


@pytest.mark.parametrize(
    "seconds, text",
    [(None, ""), (0, "0:00"), (59.9, "0:59"), (61, "1:01"), (3599, "59:59"), (3600, "1:00:00"), (7325, "2:02:05"),
     (90061, "25:01:01")],
)
def test_durations_read_like_a_clock(seconds, text):
    assert humanize.duration(seconds) == text


@pytest.mark.parametrize(
    "ago, text",
    [(0, "0s"), (42.9, "42s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (7199, "1h"), (2 * 3600 + 1, "2h"),
     (86399, "23h"), (86400, "1d"), (12 * 86400 + 5, "12d"), (-30, "0s")],  # a clock behind the store's: never negative
)
def test_ages_are_the_largest_whole_unit_rounded_down(ago, text):
    assert humanize.age(NOW - ago, NOW) == text


def test_an_age_of_nothing_is_empty():
    assert humanize.age(None, NOW) == ""


@pytest.mark.parametrize(
    "n, text",
    [(None, ""), (0, "0B"), (512, "512B"), (999, "999B"), (1000, "1.0K"), (1536, "1.5K"), (10 * 1024, "10K"),
     (999 * 1024, "999K"), (1023 * 1024, "1.0M"), (80 * 2**30, "80G"), (int(9.96 * 2**30), "10G"), (1.5 * 2**40, "1.5T"),
     (5 * 2**50, "5.0P"), (4096 * 2**50, "4096P")],
)
def test_sizes_are_powers_of_1024_in_at_most_four_characters_like_ls_h(n, text):
    assert humanize.size(n) == text


@pytest.mark.parametrize(
    "n, text",
    [(None, ""), (0, "0"), (950, "950"), (950.4, "950"), (999.6, "1.0k"), (50_000.0, "50.0k"), (12_345, "12.3k"),
     (999_960, "1.0M"), (4_100_000, "4.1M"), (2e9, "2.0G"), (3e12, "3000.0G"), (-1500, "-1.5k")],
)
def test_counts_are_compact_with_one_decimal_past_a_thousand(n, text):
    assert humanize.count(n) == text


@pytest.mark.parametrize("v, text", [(None, ""), (0, "0%"), (41.6, "42%"), (100.0, "100%")])
def test_percentages_are_whole(v, text):
    assert humanize.percent(v) == text
