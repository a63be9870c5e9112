"""Throughput with one and with two workers on the same input (issue 4, part 3).

Simulated events (pre-encoded once) go to a fresh 4-partition input topic per run; the
workers (``snoopwatch worker`` processes, one consumer group per run) are started and have
split the partitions before the first event is produced, so start-up and the first
rebalance are not timed. A run is timed from the start of producing to the moment the
workers' counters show every event processed, dead-lettered or skipped as a duplicate.
Both runs in one invocation, printed side by side; the topics are deleted afterwards.

    .venv/bin/python benchmarks/scaleout.py [--employees 200 --days 10] [--key actor|team]

Workers on one host compete for its cores: on a 2-core machine shared with other work a
second worker cannot double the rate; the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from detectors.settings import Settings
from stream.demo import free_port, scrape
from stream.kafka_security import client_kwargs
from stream.processes import stop_process
from stream.simulate import SimConfig, generate
from stream.topics import create_topics

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 4
LAG = re.compile(r'snoopwatch_consumer_lag_messages\{partition="(\d+)",topic="([^"]+)"\}')
DONE = ("snoopwatch_events_processed_total", "snoopwatch_events_duplicate_total",
        "snoopwatch_events_replayed_total")


def start_worker(settings: Settings, log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **settings.to_env()}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    return proc, f"http://127.0.0.1:{settings.web_port}/metrics"


def wait(what: str, check: object, timeout_s: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a worker exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def owned(url: str, topic: str) -> set[int]:
    return {int(m[1]) for key in scrape(url) if (m := LAG.fullmatch(key)) and m[2] == topic}


def done(urls: list[str]) -> float:
    total = 0.0
    for url in urls:
        m = scrape(url)
        total += sum(m.get(k, 0) for k in DONE) + sum(
            v for k, v in m.items() if k.startswith("snoopwatch_events_dead_lettered_total"))
    return total


async def produce(settings: Settings, msgs: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(settings),
                                linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(settings.input_topic, value=v, key=k) for k, v in msgs]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def drop_topics(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(settings.app_id)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def run(base: Settings, workers: int, msgs: list[tuple[bytes, bytes]], workdir: Path
        ) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    s = base.replace(input_topic=f"bench-so-{tag}-input", alerts_topic=f"bench-so-{tag}-alerts",
                     dlq_topic=f"bench-so-{tag}-dlq", context_topic=f"bench-so-{tag}-context",
                     app_id=f"bench-so-{tag}", partitions=PARTITIONS,
                     data_dir=str(workdir / tag), log_level="warning")
    asyncio.run(create_topics(s, PARTITIONS, out=io.StringIO()))
    procs, urls = [], []
    try:
        for i in range(workers):
            proc, url = start_worker(s.replace(web_port=free_port()), workdir / f"{tag}-{i}.log")
            procs.append(proc)
            urls.append(url)
        wait("the workers to serve /metrics", lambda: all(scrape(u) for u in urls), 90, procs)

        def split() -> bool:
            parts = [owned(u, s.input_topic) for u in urls]
            return all(parts) and set().union(*parts) == set(range(PARTITIONS)) and sum(
                map(len, parts)) == PARTITIONS

        wait("the group to split the partitions", split, 120, procs)
        load0 = os.getloadavg()[0]
        started = time.perf_counter()
        asyncio.run(produce(s, msgs))
        produced_s = time.perf_counter() - started
        wait("every event processed", lambda: done(urls) >= len(msgs), 1800, procs)
        elapsed = time.perf_counter() - started
        per_worker = [scrape(u).get("snoopwatch_events_processed_total", 0) for u in urls]
        return {"workers": workers, "events": len(msgs), "seconds": elapsed,
                "rate": len(msgs) / elapsed, "produce_s": produced_s,
                "load": (load0 + os.getloadavg()[0]) / 2,
                "split": min(per_worker) / max(max(per_worker), 1)}
    finally:
        for proc in procs:
            stop_process(proc)
        asyncio.run(drop_topics(s))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--employees", type=int, default=200)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--key", choices=("actor", "team"), default="actor",
                    help="input message key (actor: SPEC's usual key; team: every event "
                         "takes the re-key hop unless its team hashes like its actor)")
    args = ap.parse_args(argv)
    base = Settings.from_env()
    events = [ev for ev, _ in generate(SimConfig(seed=args.seed, employees=args.employees,
                                                 days=args.days))]
    msgs = [(str(ev.get(args.key) if isinstance(ev, dict) else "").encode(), orjson.dumps(ev))
            for ev in events]
    print(f"broker {base.broker}, {len(msgs)} events ({args.employees} employees x "
          f"{args.days} days), input keyed by {args.key}, {PARTITIONS} partitions, "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="snoopwatch-scaleout-") as tmp:
        rows = [run(base, n, msgs, Path(tmp)) for n in (1, 2)]
    print(f"{'workers':>8} {'events/s':>10} {'seconds':>8} {'speed-up':>9} "
          f"{'least/most busy':>16} {'load avg':>9}")
    for r in rows:
        print(f"{r['workers']:>8} {r['rate']:>10,.0f} {r['seconds']:>8.1f} "
              f"{r['rate'] / rows[0]['rate']:>9.2f} {r['split']:>16.2f} {r['load']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
