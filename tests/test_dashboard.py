"""The Grafana dashboard and its provisioning cannot drift from the code.

- ``deploy/grafana/dashboards/snoopwatch.json`` is exactly what ``stream/dashboards.py``
  generates (regenerate with ``python -m stream.dashboards``).
- Every series a panel queries is one the worker's :class:`stream.metrics.Metrics`
  registers (or Prometheus's own ``up``), and every registered metric is on the dashboard.
- The layout is sane (unique ids, no overlapping panels) and the datasource and dashboard
  provisioning point at what the dashboard and the compose stack use.

That the queries return data from a real worker is tests/test_prometheus_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from stream import dashboards
from stream.dashboards import DASHBOARD_PATH, DATASOURCE_UID, dashboard, panel_queries, render
from tests.promql import PROMETHEUS_SERIES, metric_names, registry_series

REPO = Path(__file__).resolve().parent.parent
GRAFANA = REPO / "deploy" / "grafana"

# Metrics deliberately left off the dashboard (none so far): name them here, with a reason.
# Issue 4's reliability series: panels still to add to stream/dashboards.py.
NOT_ON_DASHBOARD: set[str] = {
    "snoopwatch_events_duplicate", "snoopwatch_events_replayed", "snoopwatch_state_checkpoints",
    "snoopwatch_state_checkpointed_actors", "snoopwatch_state_restore_seconds",
    # a raw position: the lag panel shows what matters of it
    "snoopwatch_input_offset"}


def _family(series: str) -> str:
    for suffix in ("_total", "_created", "_bucket", "_count", "_sum"):
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def test_committed_dashboard_is_the_generated_one() -> None:
    assert DASHBOARD_PATH.read_text() == render(), (
        "deploy/grafana/dashboards/snoopwatch.json is stale: run 'python -m stream.dashboards'")
    assert dashboards.main(["--check"]) == 0


def test_check_mode_notices_a_hand_edit(tmp_path: Path) -> None:
    edited = tmp_path / "d.json"
    edited.write_text(render().replace("Events/s", "Events per second", 1))
    assert dashboards.main(["--check", str(edited)]) == 1
    assert dashboards.main([str(edited)]) == 0
    assert dashboards.main(["--check", str(edited)]) == 0


def test_every_queried_series_exists_in_the_metrics_registry() -> None:
    known = registry_series() | PROMETHEUS_SERIES
    used: set[str] = set()
    for title, expr in panel_queries(dashboard()):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        unknown = names - known
        assert not unknown, f"panel {title!r} queries unknown series {unknown}"
        used |= names
    families = {_family(s) for s in registry_series()}
    missing = families - {_family(s) for s in used} - NOT_ON_DASHBOARD
    assert not missing, f"metrics with no panel (add one, or list in NOT_ON_DASHBOARD): {missing}"


def test_the_issue_panels_are_there() -> None:
    d = dashboard()
    queries = "\n".join(e for _, e in panel_queries(d))
    for needle in ("rate(snoopwatch_events_consumed_total",
                   "sum by (reason) (rate(snoopwatch_events_dead_lettered_total",
                   "sum by (severity) (", "sum by (severity, detector) (",
                   "histogram_quantile(0.5, sum by (le) (rate("
                   "snoopwatch_processing_latency_seconds_bucket",
                   "histogram_quantile(0.99, sum by (le) (rate("
                   "snoopwatch_processing_latency_seconds_bucket",
                   "snoopwatch_event_time_lag_seconds_bucket",
                   "snoopwatch_consumer_lag_messages", "snoopwatch_tracked_actors",
                   "histogram_quantile(0.99, sum by (le) (rate("
                   "snoopwatch_peer_ops_wait_seconds_bucket",
                   "snoopwatch_peer_ops_held_events", "snoopwatch_peer_ops_records_total",
                   "snoopwatch_peer_ops_idle_closes_total",
                   "time() - max by (instance) (snoopwatch_peer_ops_hour_timestamp_seconds",
                   'up{job="snoopwatch"'):
        assert needle in queries, needle


def test_layout_is_sane() -> None:
    d = dashboard()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p.get("targets"), p["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == DATASOURCE_UID
    json.dumps(d)  # serialisable as is


def test_provisioning_matches_the_dashboard_and_the_compose_stack() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/snoopwatch.yml").read_text())
    (provider,) = prov["providers"]
    path = provider["options"]["path"]
    compose = yaml.safe_load((REPO / "deploy/compose/docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{path}:ro" in mounts
    assert "../grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
