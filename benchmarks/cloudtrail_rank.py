"""``python benchmarks/cloudtrail_rank.py``: does a taken-over principal rank above routine
CloudTrail traffic? (issue 16, item 3: measurement only.)

The capture is built from the shared real records (``../shared/data/sources``):

- ``aws.credential-access.ec2-steal-instance-credentials.json`` (Stratus Red Team, 45
  records): an administrator's SSM calls (benign here) and the instance role's stolen
  credentials used from outside the instance: ``GetCallerIdentity`` and
  ``DescribeInstances`` (malicious: the 2 records whose ``userIdentity`` is the role);
- the attacker then lists and downloads S3 objects with the same stolen session from a new
  network and client: 9 records written here from the role's own records (same
  ``userIdentity``, ``sourceIPAddress`` 198.51.100.23, an aws-cli ``userAgent``;
  ``ListBuckets``, 2 ``ListObjects``, 6 ``GetObject``) - malicious;
- routine traffic of other principals: the panther-analysis CloudTrail test records for which
  their rule does *not* fire (``expected_result`` false), re-timed in their order over the
  capture's span (``eventID`` prefixed with their line number, as the tests reuse ids).

Labels: malicious = every record of the stolen role (its 2 real and 9 written records), the
rest benign. Event ROC AUC: each event's score (the actor's risk just after it, as
``replay --scores`` writes) for malicious vs benign events. Actor ROC AUC: each actor's
highest score, the role against every other actor. Ties count one half.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from detectors.engine import rfc3339
from detectors.events import parse_time
from detectors.settings import Settings
from stream.replay import replay

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sources"
STOLEN = "aws.credential-access.ec2-steal-instance-credentials.json"
ATTACK_IP = "198.51.100.23"
ATTACK_UA = "aws-cli/2.17.20 md/awscrt#0.20.11 ua/2.0 os/linux#6.1.0 md/arch#x86_64"
ATTACK_CALLS = [("ListBuckets", None), ("ListObjects", None), ("ListObjects", None)] + [
    ("GetObject", f"customers/export-{i}.csv") for i in range(6)]
BUCKET = "prod-customer-data"


def build_capture(shared: Path = SHARED) -> tuple[list[dict[str, Any]], set[str]]:
    """(CloudTrail records in time order, the malicious eventIDs)."""
    stolen = json.loads((shared / "stratus-red-team" / STOLEN).read_text())
    role = [r for r in stolen if r["userIdentity"].get("type") == "AssumedRole"]
    assert role, "the sample has no assumed-role record"
    bad = {r["eventID"] for r in role}
    last = max(role, key=lambda r: r["eventTime"])
    t_last = parse_time(last["eventTime"])
    written = []
    for i, (api, key) in enumerate(ATTACK_CALLS):
        rec = {**last, "eventID": f"attack-{i}", "eventName": api,
               "eventSource": "s3.amazonaws.com", "sourceIPAddress": ATTACK_IP,
               "userAgent": ATTACK_UA, "eventTime": rfc3339(t_last + 20_000 * (i + 1)),
               "eventCategory": "Data" if api != "ListBuckets" else "Management",
               "requestParameters": ({"bucketName": BUCKET, **({"key": key} if key else {})}
                                     if api != "ListBuckets" else None),
               "additionalEventData": ({"bytesTransferredOut": 48_000.0 + i}
                                       if api == "GetObject" else None)}
        written.append(rec)
        bad.add(rec["eventID"])
    records = stolen + written
    times = [parse_time(r["eventTime"]) for r in records]
    t0, t1 = min(times), max(times)
    routine = []
    for n, line in enumerate((shared / "panther_cloudtrail_rule_tests.jsonl").read_bytes()
                             .splitlines(), 1):
        test = orjson.loads(line)
        rec = test["record"]
        if (test["log_type"] != "AWS.CloudTrail" or test["expected_result"]
                or not isinstance(rec.get("userIdentity"), dict) or not rec.get("eventName")):
            continue
        routine.append({**rec, "eventID": f"panther-{n}-{rec.get('eventID', '')}"})
    # Other principals' routine calls, spread over the capture's span (a few minutes)
    span = max(1, t1 - t0)
    for i, rec in enumerate(routine):
        rec["eventTime"] = rfc3339(t0 - 300_000 + (span + 300_000) * i // len(routine))
    records += routine
    records.sort(key=lambda r: parse_time(r["eventTime"]))
    return records, bad


def roc_auc(pos: list[float], neg: list[float]) -> float:
    """P(a positive outscores a negative), ties one half."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def measure(shared: Path = SHARED, settings: Settings | None = None) -> dict[str, Any]:
    records, bad = build_capture(shared)
    scores: dict[str, float] = {}
    actor_of: dict[str, str] = {}
    alerted: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trail = Path(tmp) / "trail.json"
        trail.write_bytes(orjson.dumps({"Records": records}))

        def on_score(ev: Any, score: float, alert: Any) -> None:
            scores[ev.event_id] = score
            actor_of[ev.event_id] = ev.actor
            if alert is not None:
                alerted[ev.actor] = alerted.get(ev.actor, 0) + 1

        summary = replay(str(trail), str(Path(tmp) / "alerts.jsonl"), fmt="cloudtrail",
                         on_score=on_score, settings=settings or Settings.from_env())
    bad_actors = {actor_of[e] for e in bad if e in actor_of}
    best: dict[str, float] = {}
    for eid, s in scores.items():
        best[actor_of[eid]] = max(best.get(actor_of[eid], 0.0), s)
    return {
        "records": len(records), "events": summary.valid,
        "dead_lettered": sum(summary.dead_lettered.values()),
        "malicious_events": sum(1 for e in scores if e in bad),
        "actors": len(best), "attacker": sorted(bad_actors),
        "event_auc": roc_auc([s for e, s in scores.items() if e in bad],
                             [s for e, s in scores.items() if e not in bad]),
        "actor_auc": roc_auc([best[a] for a in bad_actors],
                             [s for a, s in best.items() if a not in bad_actors]),
        "attacker_max_score": max((best[a] for a in bad_actors), default=0.0),
        "benign_max_score": max((s for a, s in best.items() if a not in bad_actors),
                                default=0.0),
        "alerts_attacker": sum(alerted.get(a, 0) for a in bad_actors),
        "alerts_benign": {a: n for a, n in alerted.items() if a not in bad_actors},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared sources folder")
    args = p.parse_args(argv)
    m = measure(args.shared)
    print(json.dumps(m, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
