"""``make bench``: snoopwatch's speed, measured side by side on the real local broker.

In one run (issue 6):

1. simulates N events (``stream.simulate`` when it can give every actor at least a day of
   work in N events, else :class:`benchmarks.probes.Synth`), encodes them once, writes
   them as JSONL and produces them (key = actor) to a fresh 4-partition input topic;
2. measures the drain rate of (a) a bare aiokafka consumer that only fetches and
   orjson-decodes (``probes.py bare``), (b) a faust agent that does nothing per event
   (``noop_app.py``) and (c) ``snoopwatch worker`` with every detector on, one after
   another, each in its own process and consumer group from the earliest offset, each
   timed from its first message to its last (process start-up excluded); and, before (c),
   (c0): the same worker with its detection core replaced by a constant
   (``hollow_worker.py``), what faust, decoding, validation, state and metrics cost without
   any detection, i.e. the ceiling for (c)/(b);
3. keeps (c) running and offers it half its drain rate: the rest of the simulated
   traffic, shifted a whole number of weeks on, with bursts that tip warmed-up actors into
   an alert (a stolen session: a never-seen client and network reading hundreds of
   never-seen customers without tickets). The alerts topic uses broker append time, so an
   alert's latency is its append time minus the send time of its triggering event
   (``event_ids[0]``);
4. times ``snoopwatch replay`` on the same events (minus the time of replaying an empty
   file, i.e. start-up) beside a loop that only reads and orjson-decodes the file;
5. measures resident memory per tracked actor (``probes.py memory``).

It prints one table and writes it as JSON (``--json``, default ``state/bench/latest.json``).
Everything it starts (processes, topics, files) it removes, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from benchmarks.probes import DAY_MS, HOUR_MS, Synth  # noqa: E402
from detectors import core_build  # noqa: E402
from detectors.events import parse_time  # noqa: E402
from detectors.settings import Settings, bootstrap_servers  # noqa: E402
from stream.demo import free_port, scrape  # noqa: E402
from stream.kafka_security import kafka_kw  # noqa: E402
from stream.processes import log_tail, stop_process, wait_ready  # noqa: E402
from stream.simulate import TimeFormatter  # noqa: E402

HERE = Path(__file__).resolve().parent
WEEK_MS = 7 * DAY_MS
DEFAULT_MEMORY_ACTORS = "10000,100000,1000000"
# A stolen session replayed with a scripting client from outside the company; each burst
# has its own client version and /24 (198.18.0.0/15, the benchmarking range), so one burst
# never makes the next one's client or network "common among peers".
ATTACKER_CLIENT = "python-requests/2.{burst}.0"
ATTACKER_NET = "198.{hi}.{lo}"
PROCESSED = "snoopwatch_events_processed_total"
LAG = "snoopwatch_consumer_lag_messages"
CONSUMED = "snoopwatch_events_consumed_total"


class BenchError(RuntimeError):
    """A phase could not measure what it should (the message says why)."""


def tty() -> bool:
    return sys.stderr.isatty()


def note(msg: str, *, end: str = "\n") -> None:
    """Progress on stderr, only on a terminal."""
    if tty():
        sys.stderr.write(("\r\033[K" if end == "\r" else "") + msg + ("" if end == "\r" else end))
        sys.stderr.flush()


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --- the events -------------------------------------------------------------------------------


@dataclass
class Corpus:
    """N encoded events (the same bytes for every consumer), in event-time order."""

    path: Path
    values: list[bytes]
    keys: list[bytes]
    generator: str
    actors: int
    first_ms: int
    last_ms: int
    # Warmed-up actors to tip into alerts: (actor, role, team), most events first.
    candidates: list[tuple[str, str | None, str | None]]
    seconds: float = 0.0


def choose_generator(n: int, actors: int, wanted: str) -> str:
    """The simulator gives each employee ~45 events a workday, one day at a time; it fits
    when N covers about a day of every actor's work, else the synthetic generator."""
    if wanted != "auto":
        return wanted
    return "sim" if n >= 40 * actors and actors <= 20_000 else "synthetic"


def _sim_events(n: int, actors: int, seed: int) -> Iterator[dict[str, Any]]:
    from stream.simulate import SimConfig, generate

    cfg = SimConfig(seed=seed, employees=actors, days=max(1, math.ceil(n / (20 * actors)) + 1))
    for count, (ev, _label) in enumerate(generate(cfg)):
        if count >= n:
            return
        yield ev


def _synthetic_events(n: int, actors: int, seed: int) -> Iterator[dict[str, Any]]:
    synth = Synth(actors, seed=seed)
    start = parse_time("2026-11-02T00:00:00Z")
    span = max(HOUR_MS, int(n / (actors * 40) * DAY_MS))  # ~40 events per actor-day
    pick = synth.rng.randrange
    for i in range(n):
        yield synth.event(pick(actors), start + span * i // n, f"s{seed}-{i:09d}")


def build_corpus(path: Path, n: int, actors: int, generator: str, seed: int) -> Corpus:
    """Write N events as JSONL and read them back as the messages to produce.

    Reading the file back gives plain ``bytes`` objects (an orjson result pins ~4 KB of
    memory while alive) that are exactly the file's lines, so replay reads the same bytes.
    """
    started = time.perf_counter()
    events = (_sim_events if generator == "sim" else _synthetic_events)(n, actors, seed)
    counts: Counter[str] = Counter()
    reads: Counter[str] = Counter()     # customer accesses
    ticketed: Counter[str] = Counter()  # ... of which under a ticket
    who: dict[str, tuple[str | None, str | None]] = {}
    first = last = None
    nl = orjson.OPT_APPEND_NEWLINE
    with open(path, "wb", buffering=1 << 20) as fh:
        write = fh.write
        for i, ev in enumerate(events):
            write(orjson.dumps(ev, option=nl))
            actor = ev["actor"]
            counts[actor] += 1
            if ev.get("customer_id"):
                reads[actor] += 1
                ticketed[actor] += bool(ev.get("ticket"))
            who[actor] = (ev.get("role"), ev.get("team"))
            if first is None:
                first = ev["time"]
            last = ev["time"]
            if i % 50_000 == 0:
                note(f"simulating: {i:,} events", end="\r")
    values = path.read_bytes().split(b"\n")
    if values and not values[-1]:
        values.pop()
    interned: dict[str, bytes] = {}
    keys = []
    for raw in values:
        actor = orjson.loads(raw)["actor"]
        key = interned.get(actor)
        if key is None:
            key = interned[actor] = actor.encode()
        keys.append(key)
    # Whom to tip: actors with a history who nearly always work under tickets (for them an
    # unticketed spree is telling), of the main role; the busiest first.
    roles = Counter(role for role, _ in who.values())
    main_role = "support_agent" if "support_agent" in roles else roles.most_common(1)[0][0]

    def rank(actor: str) -> tuple[bool, bool, float, int]:
        share = ticketed[actor] / reads[actor] if reads[actor] else 0.0
        return (who[actor][0] != main_role, share < 0.9 or counts[actor] < 30,
                -round(share, 2), -counts[actor])

    candidates = [(a, *who[a]) for a in sorted(counts, key=rank)]
    return Corpus(path, values, keys, generator, len(counts), parse_time(first),
                  parse_time(last), candidates, time.perf_counter() - started)


def encode_lines(objs: Iterator[dict[str, Any]]) -> list[bytes]:
    """orjson-encode many objects into plain ``bytes`` (no pinned orjson buffers)."""
    buf = bytearray()
    nl = orjson.OPT_APPEND_NEWLINE
    for obj in objs:
        buf += orjson.dumps(obj, option=nl)
    out = bytes(buf).split(b"\n")
    out.pop()
    return out


# --- Kafka helpers ----------------------------------------------------------------------------


async def create_topics(servers: str, topics: list[tuple[str, int, dict[str, str]]]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**kafka_kw(servers))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, parts, 1, topic_configs=configs or None)
                                   for name, parts, configs in topics])
    finally:
        await admin.close()


async def delete_topics(servers: str, prefix: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka_kw(servers), request_timeout_ms=20_000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


async def produce(servers: str, topic: str, keys: list[bytes], values: list[bytes]) -> float:
    """Send every message as fast as the client goes; seconds from first send to all acked."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**kafka_kw(servers), client_id="snoopwatch-bench",
                                linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        await producer.partitions_for(topic)  # wait for the new topic's metadata
        started = time.perf_counter()
        pending = []
        send = producer.send
        for i, (key, value) in enumerate(zip(keys, values, strict=True)):
            pending.append(await send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                note(f"producing: {i + 1:,}/{len(values):,}", end="\r")
        await producer.flush()
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def paced_send(servers: str, topic: str, keys: list[bytes], values: list[bytes],
                     tips: dict[int, str], rate: float) -> tuple[dict[str, float], float]:
    """Send at ``rate`` messages/s; the wall-clock send time of every tipping event."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**kafka_kw(servers), client_id="snoopwatch-bench-paced")
    await producer.start()
    sent: dict[str, float] = {}
    try:
        await producer.partitions_for(topic)
        n = len(values)
        pending: list[asyncio.Future] = []
        started = time.perf_counter()
        i = 0
        while i < n:
            due = min(n, int((time.perf_counter() - started) * rate) + 1)
            while i < due:
                tip = tips.get(i)
                if tip is not None:
                    sent[tip] = time.time()
                pending.append(await producer.send(topic, values[i], key=keys[i]))
                i += 1
            if len(pending) >= 5_000:
                done = [f for f in pending if f.done()]
                for f in done:
                    f.result()  # raises a delivery error, if any
                pending = [f for f in pending if not f.done()]
            await asyncio.sleep(0.002)
        await producer.flush()
        await asyncio.gather(*pending)
        return sent, time.perf_counter() - started
    finally:
        await producer.stop()


async def read_topic(servers: str, topic: str, partitions: int, idle_s: float = 2.0
                     ) -> list[Any]:
    """Every message on ``topic`` from the start to its current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**kafka_kw(servers), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            for msgs in batch.values():
                out.extend(msgs)
        return out
    finally:
        await consumer.stop()


# --- processes --------------------------------------------------------------------------------


def wait_committed(url: str, timeout_s: float) -> None:
    """Until the worker's consumer lag (to the committed offsets) is 0 on every partition."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lags = [v for k, v in scrape(url).items() if k.startswith(LAG + "{")]
        if lags and not any(lags):
            return
        time.sleep(0.25)
    note(f"the worker's consumer lag was not 0 after {timeout_s:.0f} s; measuring anyway")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile(list(map(float, range(1, 101))), 0.99)
    (2.0, 99.0)
    """
    k = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[k]


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    value: float | int | str | None
    unit: str
    target: str = ""
    ok: bool | None = None


@dataclass
class Bench:
    opts: argparse.Namespace
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    topics_created: bool = False

    def __post_init__(self) -> None:
        self.prefix = f"bench-{self.run_id}"
        self.servers = bootstrap_servers(self.opts.broker)
        base = Path(self.opts.workdir) if self.opts.workdir else REPO / "state" / "bench"
        self.work = base / f"run-{self.run_id}"
        self.topic = f"{self.prefix}-events"

    # --- bookkeeping ---------------------------------------------------------------------

    def add(self, metric: str, value: Any, unit: str, target: str = "",
            ok: bool | None = None) -> None:
        self.rows.append(Row(metric, value, unit, target, ok))

    def start(self, cmd: list[str], log: Path, env: dict[str, str] | None = None,
              stdout: Any = None) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env or os.environ.copy(),
                                    stdout=stdout if stdout is not None else out,
                                    stderr=out if stdout is not None else subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        stop_process(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    def probe(self, args: list[str], log: Path, timeout_s: float,
              on_line: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Run ``probes.py ARGS``; its JSON lines (stdout), as they come."""
        proc = self.start([sys.executable, str(HERE / "probes.py"), *args], log,
                          stdout=subprocess.PIPE)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                rec = orjson.loads(line)
                out.append(rec)
                if on_line:
                    on_line(rec)
                if time.monotonic() > deadline:
                    raise BenchError(f"probes.py {args[0]} took over {timeout_s:.0f} s")
            proc.wait(max(1.0, deadline - time.monotonic()))
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            self.stop(proc)
        if proc.returncode not in (0, None):
            if not out:
                raise BenchError(f"probes.py {args[0]} exited with {proc.returncode}:\n"
                                 f"{log_tail(log)}")
            self.notes.append(f"probes.py {args[0]} exited with {proc.returncode} after "
                              f"{len(out)} result(s); see {log}")
        return out

    def phase(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one phase; a failure is reported and the run goes on with the next phase."""
        if name in self.opts.skip:
            return None
        started = time.monotonic()
        self.details.setdefault("load_average", {})[name] = loadavg()
        note(f"== {name}")
        try:
            return fn()
        except Exception as err:  # reported; the other phases still run
            msg = f"{name} failed: {err}"
            if not isinstance(err, BenchError):
                traceback.print_exc()
            self.failed.append(name)
            self.notes.append(msg.splitlines()[0])
            print(f"bench: {msg}", file=sys.stderr)
            return None
        finally:
            self.details.setdefault("phase_seconds", {})[name] = round(
                time.monotonic() - started, 1)

    # --- phases ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        o = self.opts
        self.work.mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC)
        self.machine = machine()
        gen = choose_generator(o.events, o.actors, o.generator)
        note(f"bench run {self.run_id}: {o.events:,} events, ~{o.actors:,} actors ({gen})")
        corpus = build_corpus(self.work / "events.jsonl", o.events, o.actors, gen, o.seed)
        note("")
        n = len(corpus.values)
        self.details["corpus"] = {"events": n, "actors": corpus.actors, "generator": gen,
                                  "first": corpus.first_ms, "last": corpus.last_ms,
                                  "bytes": corpus.path.stat().st_size,
                                  "seconds": round(corpus.seconds, 1)}
        self.add("events", n, "events")
        self.add(f"actors ({gen} generator)", corpus.actors, "actors")
        kafka = any(p not in o.skip for p in ("bare", "noop", "worker", "latency", "hollow"))
        rates: dict[str, float] = {}
        if kafka:
            self.phase("produce", lambda: self.produce(corpus))
            if "produce" in self.failed:
                raise BenchError("could not produce the events; is the broker up?")
            for name, fn in (("bare", self.bare), ("noop", self.noop)):
                rate = self.phase(name, lambda fn=fn: fn(n))
                if rate:
                    rates[name] = rate
            try:
                # Before the latency phase adds to the input topic: the same n events.
                got = self.phase("hollow", lambda: self.worker(n, hollow=True))
                if got:
                    rates["hollow"], _, proc = got
                    self.stop(proc)
                got = self.phase("worker", lambda: self.worker(n))
                if got:
                    rates["worker"], url, proc = got
                    self.phase("latency", lambda: self.latency(corpus, rates["worker"], url,
                                                               proc))
                    self.stop(proc)
            finally:
                for proc in list(self.procs):
                    self.stop(proc)
            self.ratios(rates)
        self.phase("replay", lambda: self.replay(corpus))
        self.phase("memory", self.memory)
        return self.result(started)

    def produce(self, corpus: Corpus) -> None:
        asyncio.run(create_topics(self.servers, [(self.topic, self.opts.partitions, {})]))
        self.topics_created = True
        seconds = asyncio.run(produce(self.servers, self.topic, corpus.keys, corpus.values))
        note("")
        self.add("produce (aiokafka producer, pre-encoded)", len(corpus.values) / seconds,
                 "events/s")

    def bare(self, n: int) -> float:
        (rec,) = self.probe(["bare", "--servers", self.servers, "--topic", self.topic,
                             "--group", f"{self.prefix}-bare", "--count", str(n),
                             "--timeout", str(self.opts.timeout)],
                            self.work / "bare.log", self.opts.timeout + 60)
        if not rec["complete"] or rec["seconds"] <= 0:
            raise BenchError(f"the bare consumer read {rec['events']:,} of {n:,} messages")
        rate = n / rec["seconds"]
        self.details["bare"] = rec
        self.add("(a) bare aiokafka consumer + orjson.loads", rate, "events/s")
        return rate

    def noop(self, n: int) -> float:
        result = self.work / "noop.json"
        env = {**os.environ, "BENCH_BROKER": self.opts.broker, "BENCH_TOPIC": self.topic,
               "BENCH_APP_ID": f"{self.prefix}-noop", "BENCH_COUNT": str(n),
               "BENCH_RESULT": str(result), "BENCH_DATADIR": str(self.work / "noop")}
        log = self.work / "noop.log"
        proc = self.start([sys.executable, str(HERE / "noop_app.py")], log, env)
        try:
            wait_ready("the faust no-op app", result.exists, proc, log, self.opts.timeout,
                       goal=f"get {n:,} messages", error=BenchError)
        finally:
            self.stop(proc)
        rec = orjson.loads(result.read_bytes())
        rate = n / rec["seconds"]
        self.details["noop"] = rec
        self.add("(b) faust agent doing nothing (raw values)", rate, "events/s")
        return rate

    def worker_settings(self, name: str = "worker") -> Settings:
        p = f"{self.prefix}-{name}"
        return Settings.from_env(broker=self.opts.broker, input_topic=self.topic,
                        alerts_topic=f"{p}-alerts", dlq_topic=f"{p}-dlq",
                        context_topic=f"{p}-context", app_id=p, web_port=free_port(),
                        partitions=self.opts.partitions, data_dir=str(self.work / name))

    def worker(self, n: int, hollow: bool = False) -> tuple[float, str, subprocess.Popen]:
        """Drain the input with ``snoopwatch worker`` (or, ``hollow``, with the same worker
        whose detection core returns a constant: ``hollow_worker.py``)."""
        name = "hollow" if hollow else "worker"
        s = self.worker_settings(name)
        if not hollow:
            self.settings = s
        # The alerts topic stamps broker append time: the latency phase's clock.
        asyncio.run(create_topics(self.servers, [
            (s.alerts_topic, s.partitions, {"message.timestamp.type": "LogAppendTime"}),
            (s.dlq_topic, s.partitions, {}),
            (s.context_topic, 1, {"cleanup.policy": "compact"}),
        ]))
        env = {**os.environ, **{f"SNOOPWATCH_{f.name.upper()}": str(getattr(s, f.name))
                                for f in fields(s)}, "PYTHONUNBUFFERED": "1"}
        log = self.work / f"{name}.log"
        cmd = [str(HERE / "hollow_worker.py")] if hollow else ["-m", "stream.cli", "worker"]
        proc = self.start([sys.executable, *cmd], log, env)
        url = f"http://127.0.0.1:{s.web_port}/metrics"
        wait_ready(f"the {name} worker", lambda: scrape(url), proc, log, 120,
                   goal="serve /metrics", error=BenchError, every_s=0.1)
        start, end, metrics = self.wait_processed(url, proc, log, n, self.opts.timeout, name)
        rate = n / (end - start)
        alerts = sum(v for k, v in metrics.items() if k.startswith("snoopwatch_alerts_total{"))
        self.details[name] = {"seconds": end - start, "alerts": alerts,
                              "tracked_actors": metrics.get("snoopwatch_tracked_actors"),
                              "valid": metrics.get("snoopwatch_events_valid_total")}
        self.add("(c0) the worker, detection core replaced by a constant" if hollow
                 else "(c) snoopwatch worker, every detector on", rate, "events/s")
        return rate, url, proc

    def wait_processed(self, url: str, proc: subprocess.Popen, log: Path, n: int,
                       timeout_s: float, label: str) -> tuple[float, float, dict[str, float]]:
        """Poll /metrics until ``processed >= n``: (first-consumed time, time n was reached).

        The start is midway between the last scrape that saw nothing consumed and the first
        that saw something; the end is interpolated between the two scrapes around ``n``.
        """
        zero_at = first_at = None
        prev_t, prev_p = time.monotonic(), 0.0
        last_change = prev_t
        deadline = prev_t + timeout_s
        while True:
            now = time.monotonic()
            m = scrape(url)
            if not m:
                if proc.poll() is not None:
                    raise BenchError(f"the worker exited with {proc.returncode}:\n{log_tail(log)}")
                time.sleep(0.1)
                continue
            consumed, processed = m.get(CONSUMED, 0.0), m.get(PROCESSED, 0.0)
            if first_at is None:
                if consumed <= 0:
                    zero_at = now
                else:
                    first_at = now if zero_at is None else (zero_at + now) / 2
                    if zero_at is None and label == "worker":
                        self.notes.append(f"{label}: was already consuming at the first "
                                          "scrape; its start is estimated late")
            if processed >= n:
                span = processed - prev_p
                end = prev_t + (now - prev_t) * ((n - prev_p) / span if span > 0 else 1.0)
                assert first_at is not None
                return first_at, max(end, first_at + 1e-6), m
            if processed != prev_p:
                last_change = now
            if now - last_change > 120:
                raise BenchError(f"{label}: stuck at {processed:,.0f} of {n:,} events for "
                                 f"120 s:\n{log_tail(log)}")
            if now > deadline:
                raise BenchError(f"{label}: {processed:,.0f} of {n:,} events after "
                                 f"{timeout_s:.0f} s")
            if first_at is not None and now - first_at > 0:
                note(f"{label}: {processed:,.0f}/{n:,} ({processed / (now - first_at):,.0f}/s)",
                     end="\r")
            prev_t, prev_p = now, processed
            if proc.poll() is not None:
                raise BenchError(f"the worker exited with {proc.returncode}:\n{log_tail(log)}")
            time.sleep(0.05 if first_at is None else 0.25)

    def latency(self, corpus: Corpus, worker_rate: float, url: str,
                proc: subprocess.Popen) -> None:
        o = self.opts
        rate = o.latency_rate or worker_rate / 2
        total = max(1, int(rate * o.latency_seconds))
        bursts = min(o.latency_bursts, len(corpus.candidates))
        size = min(o.burst_size, total // max(1, 2 * bursts))
        if size < 20:
            raise BenchError(f"{total:,} events at {rate:,.0f}/s leave no room for {bursts} "
                             "bursts; raise --latency-seconds")
        keys, values, tips = self.latency_schedule(corpus, total, bursts, size)
        # From a settled worker: every drained event committed, so that the phase measures
        # live traffic, not the drain's last epoch (its actors' state written at once).
        wait_committed(url, max(60.0, 3 * self.settings.checkpoint_interval_s))
        note(f"latency: {total:,} events at {rate:,.0f}/s for {o.latency_seconds:g} s, "
             f"{bursts} bursts of {size}")
        before = scrape(url).get(PROCESSED, 0.0)
        sent, seconds = asyncio.run(paced_send(self.servers, self.topic, keys, values, tips,
                                               rate))
        self.wait_processed(url, proc, self.work / "worker.log", int(before) + total,
                            max(120.0, 3 * o.latency_seconds), "latency")
        time.sleep(1.0)  # let the last alerts reach the broker
        msgs = asyncio.run(read_topic(self.servers, self.settings.alerts_topic,
                                      self.settings.partitions))
        lat: list[float] = []
        first: dict[str, float] = {}
        per_burst: Counter[str] = Counter()
        stamp_types = set()
        for msg in msgs:
            alert = orjson.loads(msg.value)
            trigger = alert["event_ids"][0]
            if trigger not in sent:
                continue
            stamp_types.add(msg.timestamp_type)
            ms = (msg.timestamp / 1000 - sent[trigger]) * 1000
            lat.append(ms)
            burst = trigger.rsplit("-", 1)[0]
            first[burst] = min(first.get(burst, math.inf), ms)
            per_burst[alert["actor"]] += 1
        lat.sort()
        firsts = sorted(first.values())
        self.details["latency"] = {
            "offered_rate": rate, "achieved_rate": total / seconds, "events": total,
            "bursts": bursts, "burst_size": size, "alerts": len(lat),
            "bursts_alerted": len(first),
            "timestamp": "LogAppendTime" if stamp_types == {1} else "CreateTime",
            "latencies_ms": [round(x, 2) for x in lat],
            "alerts_per_tipped_actor": dict(per_burst),
            "first_alert_p50_ms": percentile(firsts, 0.5) if firsts else None,
            "first_alert_p99_ms": percentile(firsts, 0.99) if firsts else None}
        self.add("latency: offered load (half of (c))", total / seconds, "events/s")
        self.add("latency: alerts on tipping events", len(lat), "alerts", ">= 50",
                 len(lat) >= 50)
        self.add("latency: bursts that raised an alert", f"{len(first)}/{bursts}", "bursts")
        if lat:
            p99 = percentile(lat, 0.99)
            self.add("event-to-alert latency p50", percentile(lat, 0.5), "ms")
            self.add("event-to-alert latency p99", p99, "ms", "<= 1000", p99 <= 1000)
            self.add("event-to-alert latency max", lat[-1], "ms")
        else:
            raise BenchError("no alert was triggered by a tipping event")

    def latency_schedule(self, corpus: Corpus, total: int, bursts: int, size: int
                         ) -> tuple[list[bytes], list[bytes], dict[int, str]]:
        """The paced stream: the corpus again, shifted whole weeks past its end (so actors'
        histories and time of week carry on), with ``bursts`` tipping bursts spread evenly.
        """
        n = len(corpus.values)
        shift = math.ceil((corpus.last_ms - corpus.first_ms + HOUR_MS) / WEEK_MS) * WEEK_MS
        fmt = TimeFormatter()
        starts = {int((b + 0.5) * total / bursts): b for b in range(bursts)}
        tips: dict[int, str] = {}
        keys: list[bytes] = []

        def events() -> Iterator[dict[str, Any]]:
            burst = None
            k = 0
            for i in range(total):
                copy, src = divmod(i, n)
                ev = orjson.loads(corpus.values[src])
                t = parse_time(ev["time"]) + (copy + 1) * shift
                if i in starts:
                    burst, k = starts[i], 0
                if burst is not None:
                    actor, role, team = corpus.candidates[burst]
                    tid = f"{self.prefix}-tip{burst:03d}-{k:03d}"
                    tips[i] = tid
                    ev = {"event_id": tid, "time": fmt(t), "actor": actor, "action": "read",
                          "resource_type": "customer_profile",
                          "customer_id": f"{self.prefix}-c{burst:03d}{k:04d}",
                          "fields": ["email", "phone", "address"], "role": role,
                          "team": team, "client": ATTACKER_CLIENT.format(burst=burst),
                          "source_ip": ATTACKER_NET.format(hi=18 + burst // 256 % 2,
                                                           lo=burst % 256) + f".{1 + k % 250}"}
                    ev = {name: v for name, v in ev.items() if v is not None}
                    k += 1
                    if k == size:
                        burst = None
                else:
                    ev["time"] = fmt(t)
                    ev["event_id"] = f"{ev['event_id']}-r{copy}"
                keys.append(ev["actor"].encode())
                yield ev

        values = encode_lines(events())
        return keys, values, tips

    def ratios(self, rates: dict[str, float]) -> None:
        a, b, c = rates.get("bare"), rates.get("noop"), rates.get("worker")
        if a and c:
            self.add("(c)/(a) worker vs bare consumer", 100 * c / a, "%", ">= 50",
                     100 * c / a >= 50)
        if b and c:
            self.add("(c)/(b) worker vs faust no-op", 100 * c / b, "%",
                     ">= 70 (if (c)/(a) < 50)", 100 * c / b >= 70)
        if a and b:
            self.add("(b)/(a) faust no-op vs bare consumer", 100 * b / a, "%")
        if b and rates.get("hollow"):
            # What the worker reaches with no detection at all: the ceiling for (c)/(b).
            self.add("(c0)/(b) worker without detection vs no-op", 100 * rates["hollow"] / b,
                     "%")

    def replay(self, corpus: Corpus) -> None:
        n = len(corpus.values)
        (loop,) = self.probe(["readloop", str(corpus.path)], self.work / "readloop.log",
                             self.opts.timeout)
        empty = self.work / "empty.jsonl"
        empty.write_bytes(b"")

        def timed(path: Path) -> float:
            started = time.perf_counter()
            log = self.work / "replay.log"
            proc = self.start([sys.executable, "-m", "stream.cli", "replay", str(path),
                               "--alerts", str(self.work / "replay-alerts.jsonl")], log)
            try:
                rc = proc.wait(self.opts.timeout)
            except subprocess.TimeoutExpired:
                raise BenchError(f"replay took over {self.opts.timeout:.0f} s") from None
            finally:
                self.stop(proc)
            if rc != 0:
                raise BenchError(f"snoopwatch replay exited with {rc}:\n{log_tail(log)}")
            return time.perf_counter() - started

        startup = min(timed(empty) for _ in range(3))
        total = timed(corpus.path)
        seconds = max(total - startup, 1e-6)
        replay_rate, loop_rate = n / seconds, n / loop["seconds"]
        self.details["replay"] = {"seconds": seconds, "wall_seconds": total,
                                  "startup_seconds": startup, "summary": log_tail(
                                      self.work / "replay.log", 400).strip(),
                                  "read_loop_seconds": loop["seconds"]}
        self.add("snoopwatch replay", replay_rate, "events/s")
        self.add("read + orjson.loads loop, same file", loop_rate, "events/s")
        self.add("replay / read loop", 100 * replay_rate / loop_rate, "%", ">= 50",
                 replay_rate >= 0.5 * loop_rate)

    def memory(self) -> None:
        o = self.opts

        def show(rec: dict[str, Any]) -> None:
            note(f"memory: {rec['actors']:,} actors, {rec['bytes_per_actor']:,.0f} B/actor "
                 f"({rec['seconds']:.0f} s)")

        recs = self.probe(["memory", "--actors", o.memory_actors, "--per-actor",
                           str(o.memory_per_actor), "--limit-gb", str(o.memory_limit_gb)],
                          self.work / "memory.log", 4 * o.timeout, on_line=show)
        self.details["memory"] = recs
        top = max(int(x) for x in o.memory_actors.split(","))
        for rec in recs:
            k = rec["actors"]
            label = f"memory per tracked actor @ {k:,} actors"
            if rec.get("stopped"):
                label += f" (stopped; wanted {rec['wanted']:,})"
                self.notes.append(rec["stopped"])
            target, ok = "", None
            if k >= 1_000_000 or (k == top and not rec.get("stopped")):
                target, ok = "<= 4096 @ 1M", rec["bytes_per_actor"] <= 4096
            self.add(label, rec["bytes_per_actor"], "B/actor", target, ok)

    # --- output ----------------------------------------------------------------------------

    def result(self, started: datetime) -> dict[str, Any]:
        return {
            "command": " ".join(["benchmarks/bench.py", *self.opts.argv]),
            "run_id": self.run_id,
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": self.machine,
            "options": {k: sorted(v) if isinstance(v, set) else v
                        for k, v in vars(self.opts).items() if k != "argv"},
            "rows": [vars(r) for r in self.rows],
            "notes": self.notes,
            "failed": self.failed,
            "details": self.details,
        }

    def cleanup(self, ok: bool) -> None:
        for proc in list(self.procs):
            self.stop(proc)
        if self.topics_created and not self.opts.keep:
            try:
                asyncio.run(asyncio.wait_for(delete_topics(self.servers, self.prefix), 60))
            except Exception as err:  # cleanup must not hide the run's own outcome
                print(f"bench: could not delete topics {self.prefix}-*: {err}",
                      file=sys.stderr)
        if self.opts.keep:
            print(f"bench: kept {self.work} and topics {self.prefix}-*", file=sys.stderr)
        elif ok and not self.failed:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                (self.work / "events.jsonl").unlink()
            if self.work.exists():
                print(f"bench: logs kept in {self.work}", file=sys.stderr)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version(),
                            "kernel": platform.release(), "load_average": loadavg(),
                            "core": core_build()}  # the worker and replay load the same
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
    return info


def format_value(row: dict[str, Any]) -> str:
    v = row["value"]
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if row["unit"] in ("%", "ms"):
        return f"{v:,.1f}"
    return f"{v:,.0f}"


def table(result: dict[str, Any]) -> str:
    rows = [(r["metric"], format_value(r), r["unit"], r["target"],
             "" if r["ok"] is None else ("ok" if r["ok"] else "MISS"))
            for r in result["rows"]]
    head = ("metric", "value", "unit", "target", "")
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(5)]
    lines = []
    for i, row in enumerate([head, *rows]):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]),
                 row[3].ljust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths[:4]) + "  " + "-" * 4)
    m = result["machine"]
    load = "?" if m["load_average"] is None else f"{m['load_average']:.1f}"
    lines.append("")
    lines.append(f"{result['command']}  ({result['started']}; {m.get('cpu', '?')}, "
                 f"{m['cores']} cores, {m.get('memory_gb', '?')} GB, Python {m['python']}, "
                 f"{m.get('core', '?')} core, load average {load} at the start)")
    lines.extend(f"note: {n}" for n in result["notes"])
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/bench.py", description=(
            "snoopwatch's throughput, latency and memory on the real local broker "
            "(issue 6). Progress on stderr when it is a terminal; the table on stdout."))
    p.add_argument("--events", type=int, default=1_000_000, help="events to produce (N)")
    p.add_argument("--actors", type=int, default=10_000,
                   help="actors in the events (about; 1k-100k)")
    p.add_argument("--generator", choices=("auto", "sim", "synthetic"), default="auto",
                   help="stream.simulate, or the fast synthetic generator (auto: the simulator "
                        "when N gives each actor about a day of work)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--broker", default=os.environ.get("SNOOPWATCH_BROKER",
                                                      "kafka://127.0.0.1:9092"))
    p.add_argument("--partitions", type=int, default=4, help="input topic partitions")
    p.add_argument("--quick", action="store_true",
                   help="a short latency phase and memory at 10k actors only")
    p.add_argument("--latency-seconds", type=float, help="paced phase length (60; quick 10)")
    p.add_argument("--latency-bursts", type=int, help="tipping bursts (60; quick 10)")
    p.add_argument("--burst-size", type=int, default=200, help="events per tipping burst")
    p.add_argument("--latency-rate", type=float,
                   help="offered load, events/s (default: half the worker's drain rate)")
    p.add_argument("--memory-actors", help=f"actor counts ({DEFAULT_MEMORY_ACTORS}; "
                                           "quick 10000)")
    p.add_argument("--memory-per-actor", type=int, default=3,
                   help="events fed per actor in the memory probe")
    p.add_argument("--memory-limit-gb", type=float, default=16.0,
                   help="stop the memory probe before its RSS would pass this")
    p.add_argument("--skip", default="",
                   help="comma-separated phases to skip: bare,noop,worker,latency,hollow,replay,"
                        "memory")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="give up on one drain after this many seconds")
    p.add_argument("--json", default=str(REPO / "state" / "bench" / "latest.json"),
                   help="write the table and details here")
    p.add_argument("--workdir", help="where run files go (default state/bench)")
    p.add_argument("--keep", action="store_true", help="keep the run's files and topics")
    p.add_argument("--check", action="store_true",
                   help="exit with 3 when a target is missed")
    o = p.parse_args(argv)
    o.argv = list(argv)
    o.latency_seconds = o.latency_seconds or (10.0 if o.quick else 60.0)
    o.latency_bursts = o.latency_bursts or (10 if o.quick else 60)
    o.memory_actors = o.memory_actors or ("10000" if o.quick else DEFAULT_MEMORY_ACTORS)
    o.skip = {s.strip() for s in o.skip.split(",") if s.strip()}
    if "worker" in o.skip:
        o.skip.add("latency")
    if o.events < 1 or o.actors < 1:
        p.error("--events and --actors must be >= 1")
    return o


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # aiokafka logs errors (on stderr, via logging's last resort) while a new topic's metadata
    # propagates; that is expected here.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return _main(argv)
    finally:
        quiet.setLevel(level)


def _main(argv: list[str]) -> int:
    opts = parse_args(argv)
    bench = Bench(opts)

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    ok = False
    try:
        result = bench.run()
        ok = True
    except KeyboardInterrupt:
        print("bench: interrupted; stopping what it started", file=sys.stderr)
        return 130
    except BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup(ok)
        signal.signal(signal.SIGTERM, previous)
    print(table(result))
    out = Path(opts.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"\nwritten to {out}")
    if bench.failed:
        return 1
    if opts.check and any(r.ok is False for r in bench.rows):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
