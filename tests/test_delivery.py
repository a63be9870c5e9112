"""Downstream delivery, on the real broker and Debian's real Alertmanager.

``snoopwatch alerts`` (a subprocess, as a user runs it): one readable line per alert (or
its JSON), from the beginning or only new ones, malformed messages skipped with a note,
a clean exit on Ctrl-C, ``--max``/``--timeout`` for scripts.

``snoopwatch forward-alertmanager``: each alert reaches Alertmanager's API v2 once, with
the labels and annotations of stream/delivery.py; a repeated ``alert_id`` is not posted
again, neither within one run nor by a restarted forwarder (which also does not re-read
what its consumer group committed).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.settings import Settings, bootstrap_servers
from stream.delivery import ALERTNAME, to_alertmanager
from stream.demo import alert_line
from stream.topics import create_topics
from tests.procs import (
    REPO,
    alertmanager,
    fresh_settings,
    get_json,
    require_broker,
)

AM_CONFIG = """
route:
  receiver: "null"
  group_by: [alertname, actor]
  group_wait: 1s
receivers:
  - name: "null"
"""


def make_alert(alert_id: str, actor: str, severity: str, role: str | None = "support_agent",
               n_events: int = 3) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "alert_id": alert_id, "actor": actor, "role": role,
        "time": "2026-11-05T13:27:12.180Z", "emitted_at": now, "severity": severity,
        "score": {"critical": 95.4, "high": 87.9}.get(severity, 71.3),
        "summary": f"{actor} accessed 17 customers without a ticket.",
        "reasons": [{"detector": "unjustified", "score": 0.93,
                     "description": "accessed 17 customers without a ticket",
                     "observed": {"unticketed_customers": 17},
                     "expected": {"ticketed_share": 0.91}},
                    {"detector": "volume", "score": 0.4, "description": "read 40 records",
                     "observed": 40, "expected": 5.0}],
        "event_ids": [f"{alert_id}-ev{i}" for i in range(n_events)],
        "customers": 17,
    }


def _send(settings: Settings, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings.broker))
        await producer.start()
        try:
            for v in values:
                await producer.send_and_wait(settings.alerts_topic, v, key=b"k")
        finally:
            await producer.stop()

    asyncio.run(go())


def _cli(settings: Settings, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **settings.to_env()})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    require_broker()
    s = fresh_settings(tmp_path)
    asyncio.run(create_topics(s, partitions=1))  # one partition: a total order to compare
    return s


# --- offline -------------------------------------------------------------------------------


def test_alertmanager_payload() -> None:
    a = make_alert("id1", "agent-0014", "critical", n_events=14)
    am = to_alertmanager(a, resolve_after_s=3600, generator_url="https://soc.example/a/id1")
    assert am["labels"] == {"alertname": ALERTNAME, "severity": "critical",
                            "actor": "agent-0014", "alert_id": "id1",
                            "detector": "unjustified", "role": "support_agent"}
    ann = am["annotations"]
    assert ann["summary"] == a["summary"] and ann["score"] == "95.4"
    assert ann["description"].splitlines() == [
        "- unjustified (0.93): accessed 17 customers without a ticket; observed "
        "unticketed_customers 17, expected ticketed_share 0.91",
        "- volume (0.40): read 40 records; observed 40, expected 5"]
    assert ann["event_ids"].startswith("id1-ev0 id1-ev1 ") and ann["event_ids"].endswith(
        "(+4 more)")
    assert (ann["time"], ann["customers"]) == (a["time"], "17")
    assert am["startsAt"] == a["emitted_at"] and am["generatorURL"].endswith("/id1")
    assert all(isinstance(v, str) for v in [*am["labels"].values(), *ann.values()])
    no_role = to_alertmanager(make_alert("id2", "svc-batch", "high", role=None))
    assert "role" not in no_role["labels"]


# --- snoopwatch alerts ---------------------------------------------------------------------


@pytest.mark.kafka
def test_alerts_prints_one_line_per_alert(settings: Settings) -> None:
    alerts = [make_alert(f"a{i}", f"agent-{i}", sev) for i, sev in
              enumerate(["medium", "high", "critical"])]
    _send(settings, [orjson.dumps(alerts[0]), b"{not json", orjson.dumps(alerts[1]),
                     orjson.dumps(alerts[2])])
    proc = _cli(settings, "alerts", "--from-beginning", "--max", "3", "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [alert_line(a) for a in alerts]
    assert proc.stdout.splitlines()[2].startswith("[CRITICAL]  95.4  2026-11-05 13:27  agent-2")
    assert "skipped a malformed alert" in proc.stderr

    proc = _cli(settings, "alerts", "--from-beginning", "--json", "--max", "3",
                "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.splitlines()] == alerts

    # Fewer alerts than --max before --timeout: exit code 1, for scripts.
    proc = _cli(settings, "alerts", "--from-beginning", "--max", "10", "--timeout", "4")
    assert proc.returncode == 1 and len(proc.stdout.splitlines()) == 3


@pytest.mark.kafka
def test_alerts_follows_new_alerts_and_stops_cleanly_on_ctrl_c(settings: Settings) -> None:
    old = make_alert("old", "agent-1", "high")
    _send(settings, [orjson.dumps(old)])
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "alerts"], cwd=REPO,
                            env={**os.environ, **settings.to_env()}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[tuple[str, str]] = queue.Queue()
    for name, stream in (("out", proc.stdout), ("err", proc.stderr)):
        threading.Thread(target=lambda n=name, s=stream: [lines.put((n, x)) for x in s],
                         daemon=True).start()
    try:
        err = []
        while not any("following" in e for e in err):
            kind, text = lines.get(timeout=30)
            assert kind == "err", f"printed before following: {text}"
            err.append(text)
        new = make_alert("new", "agent-9", "critical")
        _send(settings, [orjson.dumps(new)])
        kind, text = lines.get(timeout=30)
        assert (kind, text.rstrip("\n")) == ("out", alert_line(new))  # not the old alert
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = []
    while not lines.empty():
        rest.append(lines.get()[1])
    assert not any("Traceback" in r for r in rest), "".join(rest)


# --- snoopwatch forward-alertmanager -------------------------------------------------------


def _held(am: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"filter": f'alertname="{ALERTNAME}"'})
    return get_json(f"{am}/api/v2/alerts?{q}")


@pytest.mark.kafka
def test_forwarder_posts_each_alert_once_to_alertmanager(settings: Settings,
                                                         tmp_path: Path) -> None:
    a = make_alert("aaaa", "agent-0014", "critical")
    b = make_alert("bbbb", "svc-export", "high", role=None)
    c = make_alert("cccc", "agent-0020", "medium")
    with alertmanager(AM_CONFIG, tmp_path) as am:
        _send(settings, [orjson.dumps(a), orjson.dumps(a), b"junk", orjson.dumps(b)])
        run = _cli(settings, "forward-alertmanager", "--url", am, "--from-beginning",
                   "--max", "4", "--timeout", "60")
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines() == [
            "forwarded aaaa [critical] agent-0014",
            "duplicate aaaa (already forwarded)",
            "forwarded bbbb [high] svc-export"], run.stderr
        assert "skipped a malformed alert" in run.stderr

        held = {x["labels"]["alert_id"]: x for x in _held(am)}
        assert set(held) == {"aaaa", "bbbb"}
        got = held["aaaa"]
        assert got["labels"] == {"alertname": ALERTNAME, "severity": "critical",
                                 "actor": "agent-0014", "alert_id": "aaaa",
                                 "detector": "unjustified", "role": "support_agent"}
        assert got["annotations"] == to_alertmanager(a)["annotations"]
        assert got["status"]["state"] == "active"
        assert got["startsAt"].startswith(a["emitted_at"][:19])
        assert held["bbbb"]["labels"]["severity"] == "high"
        assert "role" not in held["bbbb"]["labels"]

        # A restarted forwarder: what its group committed is not read again, and an alert
        # re-emitted with the same alert_id (a worker re-processing events) is not posted.
        _send(settings, [orjson.dumps(a), orjson.dumps(c)])
        run = _cli(settings, "forward-alertmanager", "--url", am, "--max", "2",
                   "--timeout", "60")
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines() == ["duplicate aaaa (already forwarded)",
                                           "forwarded cccc [medium] agent-0020"], run.stderr
        assert "2 alert id(s) already in Alertmanager" in run.stderr
        assert sorted(x["labels"]["alert_id"] for x in _held(am)) == ["aaaa", "bbbb", "cccc"]


@pytest.mark.kafka
def test_forwarder_waits_for_alertmanager_and_then_delivers(settings: Settings,
                                                            tmp_path: Path) -> None:
    """Alertmanager down: the forwarder retries and commits nothing, so the alert is
    delivered by the next run once Alertmanager is back."""
    from stream.demo import free_port

    a = make_alert("dddd", "agent-0031", "high")
    _send(settings, [orjson.dumps(a)])
    down = f"http://127.0.0.1:{free_port()}"
    run = _cli(settings, "forward-alertmanager", "--url", down, "--from-beginning",
               "--timeout", "6")
    assert run.returncode == 0
    assert run.stdout == "" and "unavailable" in run.stderr
    with alertmanager(AM_CONFIG, tmp_path) as am:  # its URL from the settings this time
        run = _cli(settings.replace(alertmanager_url=am), "forward-alertmanager",
                   "--from-beginning", "--max", "1", "--timeout", "60")
        assert run.stdout.splitlines() == ["forwarded dddd [high] agent-0031"], run.stderr
        assert [x["labels"]["alert_id"] for x in _held(am)] == ["dddd"]
