"""``snoopwatch demo``: simulate a company into Kafka, run a real worker, show its alerts.

Uses fresh topic names and a fresh consumer group per run, so it never mixes
with earlier runs on the same broker. Starts the worker as a subprocess, and
stops it before returning, whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from detectors.settings import Settings
from stream.kafka_security import check_connection, client_kwargs
from stream.processes import stop_process
from stream.shared import alert_line, scrape
from stream.simulate import SimConfig, produce
from stream.topics import topic_partitions

# A few broken messages, so the demo shows the dead-letter path too.
MALFORMED = [
    b"{not json",
    b'{"event_id": "bad-1", "actor": "x", "action": "read", "resource_type": "order"}',
    b'{"event_id": "bad-2", "time": "last tuesday", "actor": "x", "action": "read",'
    b' "resource_type": "order"}',
    b'["an", "array"]',
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _run(settings: Settings, cfg: SimConfig, timeout_s: float, log_path: Path) -> int:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    kafka = client_kwargs(settings)
    t0 = time.monotonic()
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        topics = [settings.input_topic, settings.alerts_topic, settings.dlq_topic]
        await admin.create_topics([NewTopic(t, settings.partitions, 1) for t in topics])
        # (else the producer's first sends find no metadata and log a warning each)
        await topic_partitions(admin, topics)
    finally:
        await admin.close()
    sim = await produce(cfg, settings, settings.input_topic,
                        progress=sys.stderr.isatty())
    producer = AIOKafkaProducer(**kafka)
    await producer.start()
    try:
        for raw in MALFORMED:
            await producer.send_and_wait(settings.input_topic, raw)
    finally:
        await producer.stop()
    sent = sim["events"] + len(MALFORMED)
    insiders = sim["insiders"]
    print(f"simulated {sim['actors']} staff over {cfg.days} days: {sim['events']} events "
          f"({sim['malicious']} by insiders {', '.join(insiders) or '?'}) + "
          f"{len(MALFORMED)} malformed, into topic {settings.input_topic} "
          f"in {time.monotonic() - t0:.1f}s")

    env = {**os.environ, **settings.to_env()}
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    worker = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    metrics_url = f"http://{settings.web_host}:{settings.web_port}/metrics"
    print(f"worker started (pid {worker.pid}, log {log_path}); metrics at {metrics_url}")
    print("alerts as they arrive:")
    consumer = AIOKafkaConsumer(settings.alerts_topic, **kafka,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    alerts: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    try:
        deadline = time.monotonic() + timeout_s
        quiet_since = None
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                print(f"worker exited early with code {worker.returncode}; see {log_path}")
                return 1
            batch = await consumer.getmany(timeout_ms=1000)
            for msgs in batch.values():
                for msg in msgs:
                    alert = orjson.loads(msg.value)
                    alerts.append(alert)
                    print("  " + alert_line(alert))
            metrics = scrape(metrics_url) or metrics
            consumed = metrics.get("snoopwatch_events_consumed_total", 0)
            processed = metrics.get("snoopwatch_events_processed_total", 0)
            valid = metrics.get("snoopwatch_events_valid_total", 0)
            if consumed >= sent and processed >= valid:
                # Everything is through; give the last alerts a moment to arrive.
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 2:
                    break
        else:
            print(f"timed out after {timeout_s:.0f}s; see {log_path}")
            return 1
    finally:
        await consumer.stop()
        stop_process(worker, group=True)
        log.close()

    _summary(metrics, alerts, set(insiders), metrics_url, time.monotonic() - t0)
    caught = {a["actor"] for a in alerts} & set(insiders)
    return 0 if caught == set(insiders) else 1


def _summary(metrics: dict[str, float], alerts: list[dict[str, Any]], insiders: set[str],
             metrics_url: str, elapsed: float) -> None:
    dlq = {k.split('"')[1]: int(v) for k, v in metrics.items()
           if k.startswith("snoopwatch_events_dead_lettered_total{") and v}
    by_sev = Counter(a["severity"] for a in alerts)
    normal = {a["actor"] for a in alerts} - insiders
    print("\nsummary")
    print(f"  events consumed     {int(metrics.get('snoopwatch_events_consumed_total', 0))}")
    print(f"  events processed    {int(metrics.get('snoopwatch_events_processed_total', 0))}")
    print(f"  dead-lettered       {sum(dlq.values())}"
          + (" (" + ", ".join(f"{r} {n}" for r, n in sorted(dlq.items())) + ")" if dlq else ""))
    print(f"  alerts              {len(alerts)}"
          + (" (" + ", ".join(f"{s} {by_sev[s]}" for s in
                              ("critical", "high", "medium", "low") if by_sev[s]) + ")"
             if alerts else ""))
    for actor in sorted(insiders):
        hit = [a for a in alerts if a["actor"] == actor]
        print(f"  insider {actor}: " + (f"caught, {len(hit)} alert(s), highest "
                                        f"{max(a['score'] for a in hit):.0f}" if hit
                                        else "NOT caught"))
    print(f"  normal staff alerted {len(normal)}" + (f" ({', '.join(sorted(normal))})"
                                                      if normal else ""))
    print(f"  metrics were served at {metrics_url}")
    print(f"  took {elapsed:.0f}s")


def run_demo(agents: int = 40, days: int = 5, seed: int = 11, timeout_s: float = 240.0) -> int:
    run = time.strftime("%Y%m%d%H%M%S")
    base = Settings.from_env()
    settings = base.replace(
        input_topic=f"demo-{run}-access-events", alerts_topic=f"demo-{run}-access-alerts",
        dlq_topic=f"demo-{run}-access-events-dlq", context_topic=f"demo-{run}-access-context",
        app_id=f"snoopwatch-demo-{run}", web_port=free_port(),
        data_dir=str(Path("state") / "demo" / run))
    asyncio.run(check_connection(settings))  # a refusal: one line, not a hang
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    cfg = SimConfig(seed=seed, agents=agents, days=days, insiders=1)
    return asyncio.run(_run(settings, cfg, timeout_s, Path(settings.data_dir) / "worker.log"))
