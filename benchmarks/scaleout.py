"""Throughput with one and with two workers on the same input (issue 4, part 3).

Simulated events (pre-encoded once) go to a fresh 4-partition input topic per run; the
workers (``snoopwatch worker`` processes, one consumer group per run) are started and have
split the partitions before the first event is produced, so start-up and the first
rebalance are not timed. A run is timed from the start of producing to the moment the
workers' counters show every event processed, dead-lettered or skipped as a duplicate.
Both runs in one invocation, printed side by side; the topics are deleted afterwards.

    .venv/bin/python benchmarks/scaleout.py [--employees 200 --days 10] [--key actor|team]

``--barrier-cost`` measures what the peer-ops barrier (stream/peerops.py) costs: the same
input, with the barrier on and off (``SNOOPWATCH_PEER_BARRIER=0``), ``--reps`` times each,
interleaved (on, off, on, off, ...) so that the machine's noise hits both, for each worker
count in ``--workers``. Printed: events/s (median of the repetitions) and the ratio on/off;
the wait at the barrier (``snoopwatch_peer_ops_wait_seconds``: the share of events held,
p50/p99 of the held ones, and p99 over every event, an event not held counting 0) and the
processing latency (``snoopwatch_processing_latency_seconds``) p50/p99, both interpolated
from the histograms' buckets as ``histogram_quantile`` does; and the peer-ops topic's size
(records, bytes per record, records per partition and event-time hour of the input, bytes
on the broker's disk when the broker is the local ``deploy/kafka`` one). The input is
produced flat out, so a run is a catch-up through every event-time hour of the input in
seconds: the worst case for the barrier, which waits at each hour's start; live traffic
crosses an hour boundary once an hour.

    .venv/bin/python benchmarks/scaleout.py --barrier-cost [--reps 3 --workers 1 2]

With ``--rate N`` the input is produced at N events/s instead (below what the workers take:
no backlog, every event-time hour crossed as the events arrive, as live but compressed), and
the produce-to-processed latency is printed too: the time from the k-th event's send to the
workers' counters reaching k (:func:`end_to_end`).

Workers on one host compete for its cores: on a 2-core machine shared with other work a
second worker cannot double the rate; the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from detectors.settings import Settings
from stream.demo import free_port, scrape
from stream.kafka_security import client_kwargs
from stream.peerops import peer_ops_topic_name
from stream.processes import stop_process
from stream.simulate import SimConfig, generate
from stream.topics import create_topics

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 4
LAG = re.compile(r'snoopwatch_consumer_lag_messages\{partition="(\d+)",topic="([^"]+)"\}')
DONE = ("snoopwatch_events_processed_total", "snoopwatch_events_duplicate_total",
        "snoopwatch_events_replayed_total")
BUCKET = re.compile(r'(\w+)_bucket\{le="([^"]+)"\}')
# The local broker's data (deploy/kafka/kafka.sh): the peer-ops topic's size on disk.
KAFKA_DATA = Path(os.environ.get("SNOOPWATCH_KAFKA_DATA", REPO / "state" / "kafka" / "data"))


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


def buckets(metrics: list[dict[str, float]], name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets ``[(le, count), ...]`` summed over workers."""
    out: dict[float, float] = {}
    for m in metrics:
        for key, value in m.items():
            if (b := BUCKET.fullmatch(key)) and b[1] == name:
                le = float(b[2])
                out[le] = out.get(le, 0.0) + value
    return sorted(out.items())


def quantile(q: float, cumulative: list[tuple[float, float]], extra_zeros: float = 0.0
             ) -> float:
    """``histogram_quantile(q, ...)``: linear within the bucket the rank falls in;
    ``extra_zeros`` observations of 0 added (events the barrier did not hold)."""
    cumulative = [(le, c + extra_zeros) for le, c in cumulative]
    if not cumulative or cumulative[-1][1] <= 0:
        return math.nan
    rank = q * cumulative[-1][1]
    lower, below = 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if math.isinf(le):
                return lower  # (as Prometheus: the highest finite bound)
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


async def topic_size(settings: Settings, topic: str) -> dict[str, float]:
    """Records (``read_committed``), their key + value bytes, and distinct keys."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed",
                                max_partition_fetch_bytes=16 * 1024 * 1024)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    records, size, keys = 0, 0, set()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for msg in batch.get(tp, []):
                records += 1
                size += len(msg.key or b"") + len(msg.value or b"")
                keys.add(msg.key)
            if not batch and await consumer.position(tp) >= end - 1:
                break  # (the last offsets may be transaction markers: no record to read)
    finally:
        await consumer.stop()
    disk = sum(f.stat().st_size for f in (KAFKA_DATA / f"{topic}-0").glob("*.log"))
    return {"records": records, "bytes": size, "keys": len(keys), "end_offset": end,
            "disk": disk}


async def produce_paced(settings: Settings, msgs: list[tuple[bytes, bytes]], rate: float
                        ) -> list[tuple[float, int]]:
    """Send ``msgs`` at ``rate`` a second (in 20 ms slices); ``[(perf_counter, sent), ...]``
    after each slice was handed to the broker."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=5)
    await producer.start()
    sent: list[tuple[float, int]] = []
    try:
        t0 = time.perf_counter()
        n = 0
        while n < len(msgs):
            due = min(len(msgs), int((time.perf_counter() - t0) * rate) + 1)
            futures = [await producer.send(settings.input_topic, value=v, key=k)
                       for k, v in msgs[n:due]]
            await asyncio.gather(*futures)
            n = due
            sent.append((time.perf_counter(), n))
            await asyncio.sleep(max(0.0, t0 + n / rate - time.perf_counter()))
    finally:
        await producer.stop()
    return sent


def end_to_end(sent: list[tuple[float, int]], seen: list[tuple[float, float]],
               total: int) -> list[float]:
    """Seconds from the k-th event's send to the moment the workers' counters reached k,
    for every 100th k: the order-free estimate of produce-to-processed latency (exact when
    events are processed in the order sent; the counters are sampled every 50 ms)."""
    out = []
    i = j = 0
    for k in range(1, total + 1, 100):
        while i < len(sent) and sent[i][1] < k:
            i += 1
        while j < len(seen) and seen[j][1] < k:
            j += 1
        if i < len(sent) and j < len(seen):
            out.append(max(0.0, seen[j][0] - sent[i][0]))
    return out


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


def run(base: Settings, workers: int, msgs: list[tuple[bytes, bytes]], workdir: Path,
        rate: float = 0.0) -> dict[str, Any]:
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
        seen: list[tuple[float, float]] = []
        sent: list[tuple[float, int]] = []
        if rate:
            import threading

            stop = threading.Event()

            def sample() -> None:  # the workers' counters, every 50 ms
                while not stop.is_set():
                    seen.append((time.perf_counter(), done(urls)))
                    stop.wait(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            sent = asyncio.run(produce_paced(s, msgs, rate))
        else:
            asyncio.run(produce(s, msgs))
        produced_s = time.perf_counter() - started
        wait("every event processed", lambda: done(urls) >= len(msgs), 1800, procs)
        elapsed = time.perf_counter() - started
        if rate:
            stop.set()
            sampler.join()
            seen.append((time.perf_counter(), done(urls)))
        metrics = [scrape(u) for u in urls]
        per_worker = [m.get("snoopwatch_events_processed_total", 0) for m in metrics]
        out = {"workers": workers, "events": len(msgs), "seconds": elapsed,
               "rate": len(msgs) / elapsed, "produce_s": produced_s,
               "load": (load0 + os.getloadavg()[0]) / 2,
               "split": min(per_worker) / max(max(per_worker), 1),
               "processed": sum(per_worker),
               "wait": buckets(metrics, "snoopwatch_peer_ops_wait_seconds"),
               "latency": buckets(metrics, "snoopwatch_processing_latency_seconds"),
               "idle_closes": sum(m.get("snoopwatch_peer_ops_idle_closes_total", 0)
                                  for m in metrics),
               "e2e": end_to_end(sent, seen, len(msgs)) if rate else []}
        if s.peer_barrier:
            out["topic"] = asyncio.run(topic_size(s, peer_ops_topic_name(s)))
        return out
    finally:
        for proc in procs:
            stop_process(proc)
        asyncio.run(drop_topics(s))


def barrier_cost(base: Settings, workers: list[int], reps: int,
                 msgs: list[tuple[bytes, bytes]], hours: int, workdir: Path,
                 rate: float = 0.0) -> None:
    """Barrier on and off, interleaved, ``reps`` times per worker count; print the table."""
    rows: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    for rep in range(reps):
        for n in workers:
            for on in (True, False):
                r = run(base.replace(peer_barrier=on), n, msgs, workdir, rate)
                rows.setdefault((n, on), []).append(r)
                print(f"  rep {rep + 1}: {n} worker{'s' if n > 1 else ''}, barrier "
                      f"{'on ' if on else 'off'}: {r['rate']:,.0f} events/s "
                      f"({r['seconds']:.1f} s, load {r['load']:.1f})", flush=True)
    print(f"\nevents/s: median of {reps}; latencies in seconds, interpolated from the "
          "histograms' buckets (histogram_quantile), summed over the workers of each run, "
          "median over the runs")
    if rate:
        print(f"input paced at {rate:,.0f} events/s: events/s is the input's pace unless the "
              "workers fall behind; e2e: produce to processed (scaleout.end_to_end), median "
              "over the runs of each run's p50/p99")
    print(f"{'workers':>7} {'barrier':>7} {'events/s':>9} {'on/off':>6} {'held':>6} "
          f"{'wait p50':>9} {'wait p99':>9} {'all p99':>8} {'proc p50':>9} {'proc p99':>9} "
          f"{'idle closes':>11}" + (f" {'e2e p50':>8} {'e2e p99':>8}" if rate else ""))

    def med(values: list[float]) -> float:
        return statistics.median(values)

    for n in workers:
        off_rate = med([r["rate"] for r in rows[(n, False)]])
        for on in (True, False):
            rs = rows[(n, on)]
            speed = med([r["rate"] for r in rs])
            held = [r["wait"][-1][1] if r["wait"] else 0.0 for r in rs]
            share = med([h / max(r["processed"], 1) for h, r in zip(held, rs, strict=True)])
            w50 = med([quantile(0.5, r["wait"]) for r in rs]) if any(held) else math.nan
            w99 = med([quantile(0.99, r["wait"]) for r in rs]) if any(held) else math.nan
            all99 = med([quantile(0.99, r["wait"], max(r["processed"] - h, 0))
                         for h, r in zip(held, rs, strict=True)]) if any(held) else 0.0
            p50 = med([quantile(0.5, r["latency"]) for r in rs])
            p99 = med([quantile(0.99, r["latency"]) for r in rs])
            idle = med([r["idle_closes"] for r in rs])
            e2e = ""
            if rate:
                e50 = med([statistics.quantiles(r["e2e"], n=100)[49] for r in rs])
                e99 = med([statistics.quantiles(r["e2e"], n=100)[98] for r in rs])
                e2e = f" {e50:>8.3f} {e99:>8.3f}"
            print(f"{n:>7} {'on' if on else 'off':>7} {speed:>9,.0f} "
                  f"{speed / off_rate:>6.2f} {share:>6.1%} {w50:>9.3f} {w99:>9.3f} "
                  f"{all99:>8.3f} {p50:>9.5f} {p99:>9.5f} {idle:>11.0f}{e2e}")
    print(f"\npeer-ops topic (barrier on; the input spans {hours} event-time hours x "
          f"{PARTITIONS} partitions = {hours * PARTITIONS} partition-hours):")
    for n in workers:
        for r in rows[(n, True)]:
            t = r["topic"]
            recs = max(t["records"], 1)
            print(f"  {n} worker{'s' if n > 1 else ''}: {t['records']:.0f} records "
                  f"({t['keys']:.0f} keys), {t['records'] / (hours * PARTITIONS):.2f} per "
                  f"partition-hour, {t['bytes'] / recs:,.0f} bytes per record (key + value), "
                  f"{t['bytes']:,.0f} bytes; log end offset {t['end_offset']:.0f} "
                  f"(transaction markers included)"
                  + (f"; {t['disk']:,.0f} bytes on disk, {t['disk'] / recs:,.0f} per record"
                     if t["disk"] else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--employees", type=int, default=200)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--key", choices=("actor", "team"), default="actor",
                    help="input message key (actor: SPEC's usual key; team: every event "
                         "takes the re-key hop unless its team hashes like its actor)")
    ap.add_argument("--barrier-cost", action="store_true",
                    help="the peer-ops barrier on and off, interleaved (see the module doc)")
    ap.add_argument("--reps", type=int, default=3, help="barrier-cost: runs of each")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="barrier-cost: worker counts")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="barrier-cost: produce at this many events/s (below what the "
                    "workers take) and print produce-to-processed latency; 0: flat out")
    args = ap.parse_args(argv)
    base = Settings.from_env()
    events = [ev for ev, _ in generate(SimConfig(seed=args.seed, employees=args.employees,
                                                 days=args.days))]
    msgs = [(str(ev.get(args.key) if isinstance(ev, dict) else "").encode(), orjson.dumps(ev))
            for ev in events]
    print(f"broker {base.broker}, {len(msgs)} events ({args.employees} employees x "
          f"{args.days} days), input keyed by {args.key}, {PARTITIONS} partitions, "
          f"{os.cpu_count()} CPUs", flush=True)
    if args.barrier_cost:
        hours = len({orjson.loads(v)["time"][:13] for _, v in msgs})
        print(f"load average {os.getloadavg()[0]:.1f}; {args.reps} repetitions, barrier on "
              f"and off interleaved; SNOOPWATCH_IDLE_CLOSE_S={base.idle_close_s:g}, "
              f"SNOOPWATCH_CHECKPOINT_INTERVAL_S={base.checkpoint_interval_s:g}", flush=True)
        with tempfile.TemporaryDirectory(prefix="snoopwatch-scaleout-") as tmp:
            barrier_cost(base, args.workers, args.reps, msgs, hours, Path(tmp), args.rate)
        return 0
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
