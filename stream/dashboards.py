"""The SOC's Grafana dashboard, as code.

``python -m stream.dashboards`` writes ``deploy/grafana/dashboards/snoopwatch.json``;
``python -m stream.dashboards --check`` exits 1 if that file differs from what this module
generates (``tests/test_dashboard.py`` checks the same, and that every metric a panel queries
is one that :class:`stream.metrics.Metrics` registers, so the two cannot drift apart).

Queries use Grafana's variables: ``$__rate_interval``, ``$__range``, ``$instance`` (a
multi-value variable, hence ``=~``). :func:`concrete` replaces them with fixed values, so
that the same expressions can be run against Prometheus's HTTP API directly.

>>> d = dashboard()
>>> d["uid"], len(panel_queries(d)) > 10
('snoopwatch-soc', True)
>>> concrete('rate(x{instance=~"$instance"}[$__rate_interval])')
'rate(x{instance=~".*"}[1m])'
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_PATH = REPO / "deploy" / "grafana" / "dashboards" / "snoopwatch.json"
UID = "snoopwatch-soc"
# The provisioned datasource (deploy/grafana/provisioning/datasources/prometheus.yml).
DATASOURCE_UID = "snoopwatch-prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
# The scrape job of the workers (deploy/prometheus/*.yml); the alerting rules use it too.
JOB = "snoopwatch"
SEL = f'job="{JOB}", instance=~"$instance"'

SEVERITY_COLORS = {"critical": "dark-red", "high": "orange", "medium": "yellow", "low": "blue"}


def new_alerts(selector: str, window: str, by: str) -> str:
    """Alerts raised within ``window``, summed ``by`` some labels.

    An alert counter series is created by its first alert, and ``increase()`` cannot see
    the step from "no series" to 1: a series that did not exist ``window`` ago counts in
    full, the others by their increase.
    """
    x = f"snoopwatch_alerts_total{{{selector}}}"
    return (f"sum by ({by}) (\n  ({x} unless {x} offset {window})\n  or\n"
            f"  increase({x}[{window}])\n)")


def _target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
            "range": True, **extra}


def _p50_p99(histogram: str, rate: str) -> list[dict[str, Any]]:
    """Median and 99th percentile of a histogram across the workers."""
    return [_target(f"histogram_quantile({q}, sum by (le) (rate("
                    f"{histogram}_bucket{{{SEL}}}[{rate}])))", legend, ref)
            for q, legend, ref in ((0.5, "p50", "A"), (0.99, "p99", "B"))]


class _Layout:
    """Hands out panel ids and grid positions, row by row (Grafana's grid is 24 wide)."""

    def __init__(self) -> None:
        self.next_id = 1
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.panels: list[dict[str, Any]] = []

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel = {"id": self._id(), **panel,
                 "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _newline(self) -> None:
        self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _stat(title: str, description: str, targets: list[dict[str, Any]], unit: str = "none",
          thresholds: list[tuple[float | None, str]] | None = None) -> dict[str, Any]:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit,
                                     **({"decimals": 0} if unit == "none" else {}),
                                     "thresholds": {"mode": "absolute", "steps": steps},
                                     "color": {"mode": "thresholds"}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "area", "textMode": "auto",
                    "justifyMode": "auto", "orientation": "auto"},
    }


def _timeseries(title: str, description: str, targets: list[dict[str, Any]], unit: str,
                stack: bool = False, bars: bool = False,
                overrides: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "lineWidth": 1,
                              "fillOpacity": 60 if bars else 10, "showPoints": "never",
                              "spanNulls": False,
                              "stacking": {"mode": "normal" if stack else "none",
                                           "group": "A"}}
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0, "custom": custom,
                                     "color": {"mode": "palette-classic"}},
                        "overrides": overrides or []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def _severity_colors() -> list[dict[str, Any]]:
    return [{"matcher": {"id": "byName", "options": sev},
             "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}
            for sev, color in SEVERITY_COLORS.items()]


def dashboard() -> dict[str, Any]:
    """The whole dashboard, as Grafana's JSON model."""
    lay = _Layout()
    rate = "$__rate_interval"

    lay.row("Health")
    lay.add(_stat("Workers up", "Workers of job snoopwatch that answered their last scrape.",
                  [_target(f'sum(up{{job="{JOB}"}})', "up")],
                  thresholds=[(None, "red"), (1, "green")]), 4, 4)
    lay.add(_stat("Workers down", "Scrape targets of job snoopwatch that do not answer "
                  "(alert SnoopwatchWorkerDown after 2 minutes).",
                  [_target(f'count(up{{job="{JOB}"}} == 0) or vector(0)', "down")],
                  thresholds=[(None, "green"), (1, "red")]), 4, 4)
    lay.add(_stat("Events/s", "Messages read from the input topic per second, all workers.",
                  [_target(f"sum(rate(snoopwatch_events_consumed_total{{{SEL}}}[{rate}]))",
                           "events/s")], unit="reqps"), 4, 4)
    lay.add(_stat("Critical alerts (time range)", "Critical insider alerts raised in the "
                  "dashboard's time range. Who and why: `snoopwatch alerts` or Alertmanager.",
                  [_target(new_alerts(f'{SEL}, severity="critical"', "$__range", "job")
                           + " or vector(0)", "critical", instant=True, range=False)],
                  thresholds=[(None, "green"), (1, "dark-red")]), 4, 4)
    lay.add(_stat("Tracked actors", "Actors whose state the workers hold (all workers).",
                  [_target(f"sum(snoopwatch_tracked_actors{{{SEL}}})", "actors")]), 4, 4)
    lay.add(_stat("Consumer lag", "Messages not yet processed, all partitions.",
                  [_target(f"sum(snoopwatch_consumer_lag_messages{{{SEL}}})", "messages")],
                  thresholds=[(None, "green"), (1000, "orange"), (10000, "red")]), 4, 4)
    lay.add(_timeseries("Worker health", "1 = the worker answered the scrape, 0 = it did not.",
                        [_target(f'up{{{SEL}}}', "{{instance}}")], "none"), 12, 6)
    lay.add(_timeseries("Tracked actors per worker", "Actors each worker holds state for; "
                        "they follow the partitions a worker owns.",
                        [_target(f"snoopwatch_tracked_actors{{{SEL}}}", "{{instance}}")],
                        "none"), 12, 6)

    lay.row("Events")
    lay.add(_timeseries("Events/s", "Read from the input topic, passed validation, run "
                        "through the detectors, dead-lettered; late: processed after a later "
                        "event of their actor (input not keyed by actor, or drained unevenly), "
                        "judged but not counted into their hour.", [
                            _target(f"sum(rate(snoopwatch_events_consumed_total{{{SEL}}}"
                                    f"[{rate}]))", "consumed", "A"),
                            _target(f"sum(rate(snoopwatch_events_valid_total{{{SEL}}}"
                                    f"[{rate}]))", "valid", "B"),
                            _target(f"sum(rate(snoopwatch_events_processed_total{{{SEL}}}"
                                    f"[{rate}]))", "processed", "C"),
                            _target(f"sum(rate(snoopwatch_events_dead_lettered_total{{{SEL}}}"
                                    f"[{rate}]))", "dead-lettered", "D"),
                            _target(f"sum(rate(snoopwatch_events_late_total{{{SEL}}}"
                                    f"[{rate}]))", "late", "E"),
                        ], "reqps"), 12, 8)
    lay.add(_timeseries("Dead letters by reason", "Rejected input messages per second, by "
                        "reason; each is on the dead-letter topic with its original bytes.",
                        [_target(f"sum by (reason) (rate(snoopwatch_events_dead_lettered_total"
                                 f"{{{SEL}}}[{rate}]))", "{{reason}}")], "reqps",
                        stack=True), 12, 8)

    lay.row("Insider alerts")
    lay.add(_timeseries("Alerts raised by severity", "Insider alerts raised per interval.",
                        [_target(new_alerts(SEL, rate, "severity"), "{{severity}}")],
                        "none", stack=True, bars=True, overrides=_severity_colors()), 12, 8)
    lay.add({
        "type": "table", "title": "Alerts by severity and top detector (time range)",
        "description": "Alerts raised in the dashboard's time range, by severity and the "
                       "detector that contributed most.",
        "datasource": DS,
        "targets": [_target(new_alerts(SEL, "$__range", "severity, detector"), "",
                            format="table", instant=True, range=False)],
        "transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True},
            "renameByName": {"Value": "alerts", "detector": "top detector"}}}],
        "fieldConfig": {"defaults": {"unit": "none", "decimals": 0}, "overrides": []},
        "options": {"showHeader": True,
                    "sortBy": [{"displayName": "alerts", "desc": True}]},
    }, 12, 8)

    lay.row("Latency and lag")
    lay.add(_timeseries("Processing latency", "From reading an event to finishing its "
                        "detection (alert SnoopwatchProcessingLatencyHigh: p99 > 250 ms); a "
                        "wait at the peer-ops barrier is not in it (Barrier wait).",
                        _p50_p99("snoopwatch_processing_latency_seconds", rate), "s"), 8, 8)
    lay.add(_timeseries("Event-time lag", "Wall clock minus the event's own time when it is "
                        "processed: how stale the events are (includes upstream delays).",
                        _p50_p99("snoopwatch_event_time_lag_seconds", rate), "s"), 8, 8)
    lay.add(_timeseries("Consumer lag by topic", "Messages not yet processed (log-end offset "
                        "minus committed offset), per topic (alert SnoopwatchConsumerLagGrowing).",
                        [_target(f"sum by (topic) (snoopwatch_consumer_lag_messages{{{SEL}}})",
                                 "{{topic}}")], "none"), 8, 8)
    lay.add(_timeseries("Consumer lag by partition", "Per partition and the worker that owns "
                        "it: one hot partition means a skewed key (one very busy actor).",
                        [_target("max by (topic, partition, instance) "
                                 f"(snoopwatch_consumer_lag_messages{{{SEL}}})",
                                 "{{topic}}[{{partition}}] {{instance}}")], "none"), 12, 8)
    lay.add(_timeseries("Context entries", "Watchlist entries (VIP customers, departing "
                        "staff) applied, and malformed ones dead-lettered, per interval, all "
                        "workers (each worker re-reads the whole topic at start).",
                        [_target(f"sum(increase(snoopwatch_context_entries_total{{{SEL}}}"
                                 f"[{rate}]))", "applied"),
                         _target("sum(increase(snoopwatch_context_dead_lettered_total"
                                 f"{{{SEL}}}[{rate}]))", "dead-lettered", "B")], "none"), 12, 8)
    lay.add(_timeseries("Input records by source format", "Records decoded per second by "
                        "format (spec, cloudtrail, ocsf, mapping; docs/sources.md), and those "
                        "dead-lettered, by format and reason.",
                        [_target(f"sum by (format) (rate(snoopwatch_source_records_total"
                                 f"{{{SEL}}}[{rate}]))", "{{format}}"),
                         _target("sum by (format, reason) (rate("
                                 f"snoopwatch_source_dead_lettered_total{{{SEL}}}[{rate}])) > 0",
                                 "dead-lettered {{format}} {{reason}}", "B")], "reqps"), 12, 8)

    # The peer-ops barrier (stream/peerops.py; docs/operations.md, "The peer-ops barrier"):
    # every worker waits at each event-time hour until every partition has closed it.
    lay.row("Peer-ops barrier (scale-out)")
    lay.add(_timeseries("Events held at the barrier", "Events waiting, per worker, for "
                        "every partition to close their event-time hour. A few at each "
                        "hour's start is the barrier working; held for long means a "
                        "partition does not close its hour (its worker dead, lagging or "
                        "quiet: SNOOPWATCH_IDLE_CLOSE_S).",
                        [_target(f"sum by (instance) (snoopwatch_peer_ops_held_events{{{SEL}}})",
                                 "{{instance}}")], "none"), 12, 8)
    lay.add(_timeseries("Barrier wait", "How long held events waited at the barrier (not in "
                        "Processing latency). Live traffic waits at each hour's start for an "
                        "epoch and the slowest partition, up to SNOOPWATCH_IDLE_CLOSE_S for a "
                        "quiet one; a catch-up through many hours waits more.",
                        _p50_p99("snoopwatch_peer_ops_wait_seconds", rate), "s"), 12, 8)
    lay.add(_timeseries("Peer-ops records and idle closes", "Records written to the "
                        "peer-ops topic per second (one per partition and event-time hour "
                        "entered), hours closed for idle partitions, and records found expired "
                        "by a restored worker (alert SnoopwatchPeerOpsExpired), all workers.",
                        [_target(f"sum(rate(snoopwatch_peer_ops_records_total{{{SEL}}}"
                                 f"[{rate}]))", "records"),
                         _target(f"sum(rate(snoopwatch_peer_ops_idle_closes_total{{{SEL}}}"
                                 f"[{rate}]))", "idle closes", "B"),
                         _target(f"sum(rate(snoopwatch_peer_ops_expired_total{{{SEL}}}"
                                 f"[{rate}]))", "expired (restore)", "C")], "reqps"), 12, 8)
    lay.add(_timeseries("Event-time hour behind the wall clock", "Wall clock minus the start "
                        "of the last event-time hour each worker entered with every "
                        "partition's ops: under 1 h when live; growing while events arrive "
                        "means the barrier is stuck (see Events held).",
                        [_target("time() - max by (instance) "
                                 f"(snoopwatch_peer_ops_hour_timestamp_seconds{{{SEL}}} > 0)",
                                 "{{instance}}")], "s"), 12, 8)

    return {
        "uid": UID,
        "title": "snoopwatch — insider detection (SOC)",
        "description": "snoopwatch workers: input, dead letters, insider alerts, latency, lag. "
                       "Generated by stream/dashboards.py; do not edit by hand.",
        "tags": ["snoopwatch", "security", "soc"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {"text": "Prometheus", "value": DATASOURCE_UID},
             "hide": 0, "refresh": 1, "regex": "", "options": []},
            {"name": "instance", "label": "Worker", "type": "query", "datasource": DS,
             "query": {"query": f'label_values(up{{job="{JOB}"}}, instance)',
                       "refId": "instance"},
             "definition": f'label_values(up{{job="{JOB}"}}, instance)',
             "multi": True, "includeAll": True, "allValue": ".*",
             "current": {"text": ["All"], "value": ["$__all"]},
             "hide": 0, "refresh": 2, "regex": "", "sort": 1, "options": []},
        ]},
        "panels": lay.panels,
    }


def panel_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` for every query of every panel."""
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def concrete(expr: str, rate_interval: str = "1m", range_: str = "1h",
             instance: str = ".*") -> str:
    """``expr`` with Grafana's variables replaced, ready for Prometheus's HTTP API."""
    return (expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
            .replace("$instance", instance))


def render() -> str:
    """The dashboard file's exact text."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.dashboards",
                                description="Write (or --check) the Grafana dashboard JSON.")
    p.add_argument("path", nargs="?", type=Path, default=DASHBOARD_PATH)
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the file differs from what this module generates")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is out of date: run 'python -m stream.dashboards'",
                  file=sys.stderr)
            return 1
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(text)
    print(f"wrote {args.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
