"""SPEC §2 alerts as OCSF 1.7.0 Detection Findings (class 2004), for SIEMs that read OCSF.

The finding carries the alert's id (``finding_info.uid``, ``metadata.uid``), the episode
(``metadata.correlation_uid``), the actor (``evidences[0].actor.user``), the evidence
events (``finding_info.related_events``), severity and score (``severity_id``,
``risk_score``), and each reason as an anomaly analysis: the observed value as the
anomaly, the actor's or peers' normal as the baseline.

>>> alert = {"alert_id": "a1", "actor": "ann", "role": "support", "severity": "high",
...          "time": "2026-11-28T14:03:22.123Z", "emitted_at": "2026-11-28T14:03:22.123Z",
...          "score": 81.5, "summary": "ann read 40 profiles", "customers": 40,
...          "event_ids": ["e9", "e8"], "episode_id": "ep1",
...          "reasons": [{"detector": "volume", "score": 70, "description": "many reads",
...                       "observed": 40, "expected": 3}]}
>>> f = finding(alert)
>>> f["class_uid"], f["type_uid"], f["severity_id"], f["time"], f["metadata"]["correlation_uid"]
(2004, 200401, 4, 1795874602123, 'ep1')
>>> f["anomaly_analyses"][0]["baselines"][0]["observations"][0]["value"]
'3'
"""

from __future__ import annotations

from typing import Any

import orjson

from detectors.events import parse_time

OCSF_VERSION = "1.7.0"
SEVERITY_IDS = {"low": 2, "medium": 3, "high": 4, "critical": 5}
PRODUCT = {"name": "snoopwatch", "vendor_name": "snoopwatch"}


def _text(value: Any) -> str:
    """An observed or expected value as OCSF's observation string."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def finding(alert: dict[str, Any]) -> dict[str, Any]:
    """The OCSF Detection Finding of one SPEC §2 alert dict."""
    severity = str(alert["severity"])
    time_ms = parse_time(alert["time"], "time")
    emitted_ms = parse_time(alert.get("emitted_at") or alert["time"], "emitted_at")
    user: dict[str, Any] = {"uid": str(alert["actor"]), "name": str(alert["actor"])}
    if alert.get("role"):
        user["type"] = str(alert["role"])
    reasons = alert.get("reasons") or []
    analyses = [{
        "analysis_targets": [{"name": str(alert["actor"]), "type": "actor"}],
        "anomalies": [{"observation_parameter": str(r.get("detector")),
                       "observation_type": str(r.get("description") or r.get("detector")),
                       "observations": [{"value": _text(r.get("observed"))}]}],
        "baselines": [{"observation_parameter": str(r.get("detector")),
                       "observation_type": "expected",
                       "observations": [{"value": _text(r.get("expected"))}]}],
    } for r in reasons]
    event_ids = [str(e) for e in alert.get("event_ids") or []]
    metadata: dict[str, Any] = {"version": OCSF_VERSION, "product": PRODUCT,
                                "uid": str(alert["alert_id"]), "logged_time": emitted_ms}
    if alert.get("episode_id"):
        metadata["correlation_uid"] = str(alert["episode_id"])
    out: dict[str, Any] = {
        "class_uid": 2004, "class_name": "Detection Finding",
        "category_uid": 2, "category_name": "Findings",
        "activity_id": 1, "activity_name": "Create",
        "type_uid": 200401, "type_name": "Detection Finding: Create",
        "time": time_ms,
        "severity_id": SEVERITY_IDS.get(severity, 99),
        "severity": severity.capitalize() if severity in SEVERITY_IDS else "Other",
        "status_id": 1, "status": "New",
        "is_alert": True,
        "message": str(alert.get("summary", "")),
        "risk_score": round(float(alert.get("score", 0))),
        "metadata": metadata,
        "finding_info": {
            "uid": str(alert["alert_id"]),
            "title": str(alert.get("summary", ""))[:200] or "snoopwatch alert",
            "desc": str(alert.get("summary", "")),
            "types": sorted({str(r.get("detector")) for r in reasons}) or ["none"],
            "analytic": {"name": "snoopwatch", "type_id": 2, "type": "Behavioral"},
            "created_time": emitted_ms,
            "related_events": [{"uid": e} for e in event_ids],
            "related_events_count": len(event_ids),
        },
        "evidences": [{"actor": {"user": user},
                       "data": {"customers": alert.get("customers"),
                                "event_ids": event_ids,
                                "score": alert.get("score")}}],
        "unmapped": {"reasons": reasons},
    }
    if analyses:
        out["anomaly_analyses"] = analyses
    return out
