"""``benchmarks/heldout.py``: issue 3's targets judged per seed and pooled over seeds."""

from __future__ import annotations

from benchmarks.heldout import pooled_cells, seed_cells, table
from stream.evaluate import Report

DAY_MIN = 1440.0


def report(false_alerts: int, scraper_minutes: list[float | None],
           camera_minutes: list[float | None] | None = None) -> Report:
    rep = Report(actor_days=10_000, malicious_actor_days=50, actor_day_auc=0.99,
                 recall_at={0.01: (0.9, 0.95), 0.05: (1.0, 1.0)})
    rep.alerts, rep.true_alerts = 40 + false_alerts, 40
    for label, delays in (("low_and_slow", scraper_minutes),
                          ("camera_spying", camera_minutes or [5.0, 7.0])):
        found = [d for d in delays if d is not None]
        rep.scenarios[label] = {"instances": len(delays), "detected": len(found),
                                "minutes_to_detect": delays}
    return rep


def test_a_seed_that_meets_every_target_shows_no_miss() -> None:
    cells = seed_cells(report(3, [1.0 * DAY_MIN, 2.0 * DAY_MIN]))
    assert all(ok is not False for _, ok in cells.values())
    assert cells["low_and_slow: median time"] == ("36.0 h", True)
    assert cells["false alerts per 1,000 actor-days"] == ("0.30", True)
    assert "MISS" not in table({"seed 1": cells})


def test_each_kind_of_miss_is_marked() -> None:
    rep = report(12, [3.5 * DAY_MIN, 4.0 * DAY_MIN], camera_minutes=[5.0, None, None])
    rep.actor_day_auc = 0.97
    rep.recall_at[0.01] = (0.8, 0.95)
    cells = seed_cells(rep)
    missed = {row for row, (_, ok) in cells.items() if ok is False}
    assert missed == {"actor-day ROC AUC", "recall at 1% / ceiling",
                      "false alerts per 1,000 actor-days", "low_and_slow: median time",
                      "camera_spying: detected"}
    assert cells["camera_spying: median time"] == ("5 min", True)  # of those detected
    assert table({"seed 1": cells}).count("MISS") == 5


def test_pooled_figures_count_every_instance_and_actor_day() -> None:
    # One seed misses low-and-slow (median of 3.5 and 4 days); over both seeds the median
    # of the four scrapers is 2.75 days, and false alerts pool over all actor-days.
    fast, slow = report(2, [1.0 * DAY_MIN, 2.0 * DAY_MIN]), report(16, [3.5 * DAY_MIN,
                                                                     4.0 * DAY_MIN])
    assert seed_cells(slow)["low_and_slow: median time"][1] is False
    pooled = pooled_cells([fast, slow])
    assert pooled["low_and_slow: median time"] == ("2.75 days", True)
    assert pooled["low_and_slow: detected"] == ("4/4", True)
    assert pooled["false alerts per 1,000 actor-days"] == ("0.90", True)
    assert pooled["actor-day ROC AUC"] == ("worst 0.990", True)
