"""deploy/prometheus and the Alertmanager configs, checked by the real tools.

``promtool check config`` on every Prometheus config we ship, ``promtool check rules`` and
``promtool test rules`` (deploy/prometheus/tests/) on the alerting rules, ``amtool
check-config`` on the Alertmanager configs; plus the consistency a tool cannot see: rules
only use series the worker exports, each rule is unit-tested firing, and each has a runbook
section in docs/operations.md. The tools come from Debian (``make system-deps``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.procs import need_binary
from tests.promql import PROMETHEUS_SERIES, metric_names, registry_series

REPO = Path(__file__).resolve().parent.parent
PROM = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
PROM_CONFIGS = [PROM / "prometheus.yml", PROM / "prometheus-kubernetes.yml",
                REPO / "deploy" / "compose" / "prometheus.yml"]
AM_CONFIGS = [REPO / "deploy" / "compose" / "alertmanager.yml"]
OPERATIONS = REPO / "docs" / "operations.md"


def _run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out}"
    return out


def _rules() -> list[dict]:
    return [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]
            for r in g["rules"]]


def test_rule_files_pass_promtool_check() -> None:
    assert RULE_FILES
    out = _run(need_binary("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert "SUCCESS" in out


def test_rules_pass_their_promtool_unit_tests() -> None:
    assert RULE_TESTS
    out = _run(need_binary("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert "SUCCESS" in out


@pytest.mark.parametrize("config", PROM_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_prometheus_configs_pass_promtool_check(config: Path) -> None:
    _run(need_binary("promtool"), "check", "config", str(config))
    scrape = yaml.safe_load(config.read_text())["scrape_configs"]
    assert [s["job_name"] for s in scrape] == ["snoopwatch"]  # what rules and dashboard use


@pytest.mark.parametrize("config", AM_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_alertmanager_configs_pass_amtool_check(config: Path) -> None:
    _run(need_binary("amtool"), "check-config", str(config))


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    """The checks above are not vacuous: promtool rejects a broken rule and a wrong test."""
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(x[5m])\n")
    proc = subprocess.run([need_binary("promtool"), "check", "rules", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    rules = tmp_path / "rules.yml"
    rules.write_text(RULE_FILES[0].read_text().replace("== 0\n", "== 1\n", 1))
    test = tmp_path / "t.yml"
    test.write_text(RULE_TESTS[0].read_text().replace("../rules/snoopwatch.rules.yml",
                                                      str(rules)))
    proc = subprocess.run([need_binary("promtool"), "test", "rules", str(test)],
                          capture_output=True, text=True)
    assert proc.returncode != 0, "a worker-down rule that fires on healthy workers passed"


def test_rules_use_only_series_the_worker_exports() -> None:
    known = registry_series() | PROMETHEUS_SERIES
    for rule in _rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']} uses unknown series {names - known}"


def test_the_issue_rules_exist_and_each_is_unit_tested_firing() -> None:
    names = {r["alert"] for r in _rules()}
    assert {"SnoopwatchWorkerDown", "SnoopwatchNoEventsReceived",
            "SnoopwatchDeadLetterRateHigh", "SnoopwatchConsumerLagGrowing",
            "SnoopwatchProcessingLatencyHigh", "SnoopwatchCriticalInsiderAlert"} <= names
    fired = {case["alertname"] for f in RULE_TESTS
             for test in yaml.safe_load(f.read_text())["tests"]
             for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert names <= fired, f"rules never shown firing in a promtool test: {names - fired}"


def test_every_rule_has_labels_and_a_runbook_section() -> None:
    headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", OPERATIONS.read_text(), re.M)}
    for rule in _rules():
        assert rule["labels"]["severity"] in {"page", "critical", "warning"}, rule["alert"]
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], rule["alert"]
        anchor = ann["runbook"].split("#", 1)[1]
        assert ann["runbook"].startswith("docs/operations.md#"), rule["alert"]
        assert anchor in headings, f"{rule['alert']}: no heading for #{anchor} in operations.md"


def test_file_sd_targets_are_well_formed() -> None:
    for f in sorted((PROM / "targets").glob("*.yml")):
        groups = yaml.safe_load(f.read_text())
        assert isinstance(groups, list) and groups, f
        for g in groups:
            assert set(g) <= {"targets", "labels"}, f
            assert all(re.fullmatch(r"[\w.-]+:\d+", t) for t in g["targets"]), f
