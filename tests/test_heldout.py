"""``benchmarks/heldout.py``: issue 14's targets judged per company, per budget and as a gap."""

from __future__ import annotations

from benchmarks.heldout import budget_cells, company_cells, gap_cells, main, table
from stream.evaluate import Report


def report(false_alerts: int, detected: dict[str, tuple[int, int]], auc: float = 0.99,
           recall: tuple[float, float] = (0.9, 0.95)) -> Report:
    rep = Report(actor_days=10_050, malicious_actor_days=50, actor_day_auc=auc,
                 recall_at={0.01: (0.5, 0.6), 0.05: recall})
    rep.alerts, rep.true_alerts = 40 + false_alerts, 40
    for label, (found, n) in detected.items():
        rep.scenarios[label] = {"instances": n, "detected": found}
    return rep


def test_a_company_that_meets_every_target_shows_no_miss() -> None:
    cells = company_cells(report(3, {"low_and_slow": (9, 10), "vip_snooping": (2, 2)}))
    assert all(ok is not False for _, ok in cells.values())
    assert cells["false alerts per 1,000 actor-days"] == ("0.30", True)
    assert cells["low_and_slow: detected"] == ("9/10", True)
    assert "MISS" not in table({"heldout 1": cells})


def test_each_kind_of_miss_is_marked() -> None:
    # AUC below 0.97, recall 0.8 of a 0.95 ceiling (0.84 < 0.9), 1.2 false per 1,000,
    # 8 of 10 instances of one scenario (a scenario counts per instance, not "any").
    rep = report(12, {"low_and_slow": (8, 10), "bulk_leak": (1, 1)}, auc=0.965,
                 recall=(0.8, 0.95))
    cells = company_cells(rep)
    missed = {row for row, (_, ok) in cells.items() if ok is False}
    assert missed == {"actor-day ROC AUC", "recall at 5% / ceiling",
                      "false alerts per 1,000 actor-days", "low_and_slow: detected"}
    assert table({"heldout 1": cells}).count("MISS") == 4


def test_budgets_allow_twice_the_budget_and_need_the_instances() -> None:
    cells = budget_cells({0.5: report(10, {"x": (10, 10)}),   # 1.0 <= 2 x 0.5
                          1.0: report(21, {"x": (10, 10)}),   # 2.1 > 2 x 1
                          3.0: report(30, {"x": (8, 10)})})   # 8/10 < 90 %
    assert cells["budget 0.5: false per 1,000"] == ("1.00", True)
    assert cells["budget 1: false per 1,000"] == ("2.10", False)
    assert cells["budget 3: false per 1,000"] == ("3.00", True)
    assert cells["budget 3: instances detected"] == ("8/10", False)


def test_gap_is_tuning_minus_heldout_mean_auc() -> None:
    assert gap_cells({"heldout": [0.9]}) == {}
    cells = gap_cells({"tuning": [0.99, 0.99], "heldout": [0.96, 0.98]})
    assert cells["AUC gap (tuning - held-out)"] == ("+0.020", True)
    cells = gap_cells({"tuning": [0.99], "heldout": [0.95]})
    assert cells["AUC gap (tuning - held-out)"] == ("+0.040", False)


def test_nonpositive_budget_is_refused(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit):
        main(["--seeds", "1", "--budget", "0"])
    assert "--budget values must be > 0" in capsys.readouterr().err
