"""Exact recovery after SIGKILL at seeded random moments, on the real broker (issue 15).

Per run: a company (``snoopwatch simulate``'s, seeded per run) with its context file and
``--malformed`` malformed lines (plus two malformed context entries) goes to a fresh
1-partition input topic; ``snoopwatch worker`` is killed with SIGKILL ``--kills`` times, each
when its observed input position (``snoopwatch_input_offset``: the offset after the last
message it took) reaches a seeded random offset, and restarted; then every message of the
alerts and dead-letter topics is compared with an uninterrupted ``snoopwatch replay`` of the
same files. A run is *exact* when the set of alert ids equals replay's, every alert sent
(re-sends included) equals replay's alert of its id byte for byte but for ``emitted_at``, and
every malformed message (and context entry) is dead-lettered exactly once per offset.

    SNOOPWATCH_TEST_BROKER=kafka://127.0.0.1:9092 \\
        .venv/bin/python benchmarks/recovery.py --runs 20 --kills 3 --employees 30 --days 4

``--mode handover``: a second worker (same group) is started when the first's input position
reaches a seeded offset; once the group is stable with both, the worker holding the partition
is SIGKILLed at a later seeded offset and the other must take over from the last epoch and
finish. ``--mode broker-restart``: a broker of its own (its own state dir and free ports; the
Kafka jars linked from ``state/kafka/lib`` or ``SNOOPWATCH_KAFKA_LIB``, not fetched again) is
stopped with ``kafka.sh down`` at a seeded offset, kept down ``--outage`` seconds and started
again with ``up`` (data kept); a worker that exits is restarted, as a supervisor would. Both
are compared with replay as above. (Positions come from ``snoopwatch_input_offset``, not a
count of consumed messages: that over-counts once a rebalance makes a worker read again.)

``tests/test_recovery.py`` runs one short case of each in the suite.

``--scaleout`` measures instead what issue 15 item 2 is about: the same input on 4 partitions
keyed by actor, run by 1 worker, and by 2 workers (started together) of which one is SIGKILLed
at a seeded count of consumed messages and restarted; each run's alerts against replay's,
every copy sent included. ``--no-barrier`` runs the workers without the peer-ops barrier
(as before it), for comparison. ``tests/test_peer_barrier.py`` runs it without the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detectors.settings import Settings
from stream.deadletters import partitions_of
from stream.demo import free_port, scrape
from stream.kafka_security import client_kwargs
from stream.pipeline import encode
from stream.processes import log_tail, stop_process, wait_ready
from stream.replay import replay
from stream.simulate import SimConfig, context_entries, generate
from stream.topics import create_topics, read_to_end

REPO = Path(__file__).resolve().parent.parent
BROKER = os.environ.get("SNOOPWATCH_TEST_BROKER", "kafka://127.0.0.1:9092")
MALFORMED = [b"{oops", b"[]", b"null", b'{"event_id": "x"}', b"\xff\xfe not utf-8",
             b'{"event_id": "y", "time": "soon", "actor": "a", "action": "read", '
             b'"resource_type": "order"}', b'"just a string"']
MODES = ("kills", "handover", "broker-restart")
BAD_CONTEXT = [b"{broken", b'{"kind": "vip_customer"}']  # (not JSON; no id)


@dataclass
class Case:
    """One input: event lines (valid and malformed) and context lines, as sent and replayed."""

    events: list[tuple[bytes | None, bytes]]  # (key, value) in input order
    context: list[tuple[bytes, bytes]]
    malformed_at: set[int]  # input offsets of the malformed lines
    bad_context_at: set[int]  # context offsets of the malformed entries


def make_case(cfg: SimConfig, malformed: int, seed: int) -> Case:
    rng = random.Random(seed)
    events: list[tuple[bytes | None, bytes]] = [(ev["actor"].encode(), orjson.dumps(ev))
                                                for ev, _ in generate(cfg)]
    for i in sorted(rng.sample(range(len(events)), malformed), reverse=True):
        events.insert(i, (None, rng.choice(MALFORMED) + f" #{i}".encode()))
    bad = {i for i, (k, _) in enumerate(events) if k is None}
    context = [(f"{e['kind']}:{e['id']}".encode(), orjson.dumps(e))
               for e in context_entries(cfg)]
    at = sorted(rng.sample(range(len(context) + len(BAD_CONTEXT)), len(BAD_CONTEXT)))
    for i, raw in zip(at, BAD_CONTEXT, strict=True):
        context.insert(i, (f"bad:{i}".encode(), raw))
    return Case(events, context, bad, set(at))


def replay_alerts(case: Case, workdir: Path) -> dict[str, bytes]:
    """alert_id -> replay's alert bytes (``emitted_at`` left out, keys sorted)."""
    ev, ctx, out = workdir / "events.jsonl", workdir / "context.jsonl", workdir / "alerts"
    ev.write_bytes(b"".join(v + b"\n" for _, v in case.events))
    ctx.write_bytes(b"".join(v + b"\n" for _, v in case.context))
    replay(str(ev), str(out), context_path=str(ctx))
    alerts = {}
    for line in out.read_bytes().splitlines():
        a = orjson.loads(line)
        a.pop("emitted_at", None)
        alerts[a["alert_id"]] = encode(a)
    return alerts


async def publish(settings: Settings, case: Case, keyed: bool = False) -> None:
    """``case`` on the input: all on partition 0, or (``keyed``) by its key, the actor, on a
    multi-partition input (malformed lines have no key). Context always on partition 0."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(settings),
                                linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(settings.context_topic, value=v, key=k, partition=0)
                   for k, v in case.context]
        await asyncio.gather(*futures)
        futures = [await producer.send(settings.input_topic, value=v, key=k,
                                       partition=None if keyed else 0)
                   for k, v in case.events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str) -> list[Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client_kwargs(settings),
                                group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    got: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
        if not tps:
            return got
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            await consumer.seek_to_beginning(tp)
        await read_to_end(consumer, {tp for tp in tps if ends[tp] > 0}, ends, got.append)
    finally:
        await consumer.stop()
    return got


async def group_offsets(settings: Settings) -> dict[Any, Any]:
    """The group's committed offsets; none while the broker has no group coordinator yet
    (a fresh broker creates its offsets topic on first use)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        return await admin.list_consumer_group_offsets(settings.app_id)
    except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
        return {}
    finally:
        await admin.close()


async def committed(settings: Settings) -> int:
    """The group's committed offset of input partition 0 (0 if none)."""
    offsets = await group_offsets(settings)
    return max([m.offset for tp, m in offsets.items()
                if tp.topic == settings.input_topic and m.offset >= 0] or [0])


def start_worker(settings: Settings, log: Path) -> tuple[subprocess.Popen, str]:
    # Unbuffered: a SIGKILLed worker's last log lines are what tells what it was doing.
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    return proc, f"http://127.0.0.1:{settings.web_port}/metrics"


def _wait(what: str, check: Any, proc: subprocess.Popen, log: Path, timeout_s: float,
          every_s: float = 0.2) -> Any:
    return wait_ready(what, check, proc, log, timeout_s, goal=f"reach {what}", every_s=every_s)


def input_offset(url: str, settings: Settings, partition: int = 0) -> int:
    """The worker's position on an input partition (``snoopwatch_input_offset``): the offset
    after the last message it took; 0 while it holds none or does not answer. Unlike a count
    of consumed messages, it stays right when a rebalance makes a worker read again.

    A worker given the partition in a rebalance has no such series until it takes a message:
    if it holds it (it shows the partition's consumer lag), it stands at the group's committed
    offset (all of the input, when the input was read before the rebalance ended)."""
    want = (f'topic="{settings.input_topic}"', f'partition="{partition}"')
    holds = False
    for name, value in scrape(url).items():
        if name.startswith("snoopwatch_input_offset{") and all(w in name for w in want):
            return int(value)
        holds = holds or (name.startswith("snoopwatch_consumer_lag_messages{")
                          and all(w in name for w in want))
    return asyncio.run(committed(settings)) if holds else 0


@dataclass
class Worker:
    """One ``snoopwatch worker`` subprocess of a run."""

    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    def offset(self, settings: Settings) -> int:
        return input_offset(self.url, settings)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def spawn(settings: Settings, log: Path, name: str = "worker") -> Worker:
    """A worker on a free /metrics port, logging (appending) to ``log``; ``name`` is its
    SNOOPWATCH_WORKER_ID (a restart under the same name aborts what its dead self left
    open at once; a worker killed and not restarted leaves the survivor to wait for the
    broker's transaction timeout)."""
    proc, url = start_worker(settings.replace(web_port=free_port(), worker_id=name), log)
    return Worker(name, proc, url, log)


def kill_at(workers: list[Worker], settings: Settings, target: int,
            timeout_s: float = 300) -> tuple[Worker, int]:
    """SIGKILL whichever of ``workers`` first reports an input position of at least ``target``
    (with one input partition, the one that holds it); (that worker, its position)."""
    def reached() -> tuple[Worker, int] | None:
        for w in workers:
            if w.proc.poll() is not None:  # any of them dying by itself fails the run
                raise RuntimeError(f"{w.name} exited with {w.proc.returncode}:\n"
                                   f"{log_tail(w.log)}")
            if (pos := w.offset(settings)) >= target:
                return w, pos
        return None

    w, pos = _wait(f"input offset {target}", reached, workers[0].proc, workers[0].log,
                   timeout_s, 0.005)
    w.kill()
    return w, pos


@dataclass
class Run:
    """One run's input on the broker: topics and a consumer group of its own."""

    case: Case
    settings: Settings
    expected: dict[str, bytes]  # replay's alerts
    started: float

    @property
    def total(self) -> int:
        return len(self.case.events)


def prepare(case: Case, workdir: Path, checkpoint_interval_s: float = 1.0,
            broker: str = BROKER, **overrides: Any) -> Run:
    """Replay ``case``, then publish it to fresh 1-partition topics on ``broker``."""
    import uuid

    started = time.monotonic()
    expected = replay_alerts(case, workdir)
    run = uuid.uuid4().hex[:8]
    settings = Settings(broker=broker, input_topic=f"r-{run}-events",
                        alerts_topic=f"r-{run}-alerts", dlq_topic=f"r-{run}-dlq",
                        context_topic=f"r-{run}-context", app_id=f"snoopwatch-recovery-{run}",
                        data_dir=str(workdir), partitions=1,
                        checkpoint_interval_s=checkpoint_interval_s).replace(**overrides)
    asyncio.run(create_topics(settings, 1))
    asyncio.run(publish(settings, case))
    return Run(case, settings, expected, started)


def finish(run: Run, worker: Worker, timeout_s: float = 600) -> None:
    """Wait until the group has committed every input message, then stop ``worker``."""
    try:
        def done() -> bool:
            return bool(scrape(worker.url)) and asyncio.run(committed(run.settings)) >= run.total
        _wait("every input message committed", done, worker.proc, worker.log, timeout_s, 0.5)
    finally:
        stop_process(worker.proc, timeout=30)


@dataclass
class Outcome:
    """What one run found; ``exact`` when nothing differs from replay."""

    kills_at: list[int]
    replay_alerts: int
    ids_missing: list[str] = field(default_factory=list)
    ids_extra: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)  # ids sent with other contents
    resent: int = 0  # alerts sent more than once (identical: allowed)
    dlq_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    story: list[str] = field(default_factory=list)  # what happened, for the report line
    fields: Counter = field(default_factory=Counter)  # of differing alerts: fields that differ

    @property
    def exact(self) -> bool:
        return not (self.ids_missing or self.ids_extra or self.differing or self.dlq_problems)

    def line(self) -> str:
        what = "exact" if self.exact else (
            f"NOT exact: missing {self.ids_missing}, extra {self.ids_extra}, differing "
            f"{self.differing} (fields {dict(self.fields)}), dead letters {self.dlq_problems}")
        told = "; ".join(self.story) if self.story else f"killed at offsets {self.kills_at}"
        return (f"{told}; {self.replay_alerts} alerts in replay, "
                f"{self.resent} re-sent identically; {what} ({self.seconds:.0f}s)")


def compare(run: Run, kills_at: list[int], story: list[str] | None = None) -> Outcome:
    """The alerts and dead letters on the run's topics against replay's (see the docstring)."""
    settings, case, expected = run.settings, run.case, run.expected
    out = Outcome(kills_at, len(expected), story=story or [])
    sent: Counter = Counter()
    for msg in asyncio.run(read_all(settings, settings.alerts_topic)):
        a = orjson.loads(msg.value)
        a.pop("emitted_at", None)
        sent[a["alert_id"]] += 1
        if a["alert_id"] in expected and encode(a) != expected[a["alert_id"]]:
            out.differing.append(a["alert_id"])
            theirs = orjson.loads(expected[a["alert_id"]])
            out.fields.update(k for k in a.keys() | theirs.keys() if a.get(k) != theirs.get(k))
    out.ids_missing = sorted(set(expected) - set(sent))
    out.ids_extra = sorted(set(sent) - set(expected))
    out.resent = sum(n - 1 for n in sent.values())
    origins: Counter = Counter()
    for msg in asyncio.run(read_all(settings, settings.dlq_topic)):
        src = orjson.loads(msg.value)["source"]
        origins[src["topic"], src["offset"]] += 1
    want = ({(settings.input_topic, o) for o in case.malformed_at}
            | {(settings.context_topic, o) for o in case.bad_context_at})
    for where in sorted(want | set(origins)):
        if origins[where] != 1 or where not in want:
            out.dlq_problems.append(f"{where[0]}@{where[1]} x{origins[where]}")
    out.seconds = time.monotonic() - run.started
    return out


def run_case(case: Case, workdir: Path, kills: int, seed: int,
             checkpoint_interval_s: float = 1.0, broker: str = BROKER) -> Outcome:
    """Publish ``case``, run the worker with ``kills`` seeded SIGKILLs, compare with replay."""
    run = prepare(case, workdir, checkpoint_interval_s, broker)
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(run.total // 10, run.total * 9 // 10), kills))
    log = workdir / "worker.log"
    kills_at = []
    for target in targets:
        w = spawn(run.settings, log)
        try:
            kills_at.append(kill_at([w], run.settings, target)[1])
        finally:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    finish(run, spawn(run.settings, log))
    return compare(run, kills_at)


async def topic_end(settings: Settings, topic: str) -> int:
    """The end offset of partition 0 of ``topic`` (0 if it has none)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None)
    await consumer.start()
    try:
        if not await partitions_of(settings, topic):
            return 0
        tp = TopicPartition(topic, 0)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def group_state(settings: Settings) -> tuple[str, int]:
    """(state, members) of the run's consumer group, e.g. ("Stable", 2)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        for resp in await admin.describe_consumer_groups([settings.app_id]):
            for g in resp.groups:  # (error_code, group_id, state, protocol_type, protocol,
                return g[2], len(g[5])  # members, ...)
    finally:
        await admin.close()
    return "", 0


def run_handover(case: Case, workdir: Path, seed: int, checkpoint_interval_s: float = 1.0,
                 broker: str = BROKER) -> Outcome:
    """A second worker joins the group when the first's input position reaches a seeded
    offset; once the group is stable with both, the one holding the partition is SIGKILLed at
    a later seeded offset, and the other must take over from the last epoch and finish."""
    # The survivor is handed the partition once the dead worker's session expires.
    run = prepare(case, workdir, checkpoint_interval_s, broker, session_timeout_s=6.0)
    rng = random.Random(seed)
    join_at = rng.randrange(run.total // 10, run.total * 3 // 10)
    kill_target = rng.randrange(run.total * 11 // 20, run.total * 17 // 20)
    first = spawn(run.settings, workdir / "first.log", "first")
    second: Worker | None = None
    story = []
    try:
        pos = _wait(f"input offset {join_at}",
                    lambda: (p := first.offset(run.settings)) >= join_at and p,
                    first.proc, first.log, 300, 0.005)
        second = spawn(run.settings, workdir / "second.log", "second")
        story.append(f"second worker started at offset {pos}")
        # Both in the group and the partition assigned (else the kill would hit a worker
        # that has not handed anything over yet).
        _wait("a stable group of 2", lambda: asyncio.run(group_state(run.settings))
              == ("Stable", 2), second.proc, second.log, 120, 0.1)
        story.append(f"group of 2 stable, resuming at committed offset "
                     f"{asyncio.run(committed(run.settings))}")
        victim, pos = kill_at([first, second], run.settings, kill_target)
        survivor = second if victim is first else first
        story.append(f"{victim.name} (holding the partition) SIGKILLed at offset {pos} "
                     f"(target {kill_target}), "
                     f"{survivor.name} finished")
    except BaseException:
        for w in (first, second):
            if w is not None:
                stop_process(w.proc, timeout=10)
        raise
    finish(run, survivor)
    # What the survivor took over: the state records the dead holder's epochs left.
    restored = re.findall(r"snoopwatch: restored (\d+) state records of partition 0",
                          survivor.log.read_text(errors="replace"))
    story.append(f"{survivor.name} restored {int(restored[-1]) if restored else 0} state "
                 f"records")
    hopped = asyncio.run(topic_end(run.settings, f"{run.settings.app_id}-events-by-actor"))
    story.append(f"{hopped} events took the by-actor hop")  # 1 partition: 0 unless a
    # rebalance made a worker forward what it no longer detects in place
    return compare(run, [pos], story)


KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


@dataclass
class Broker:
    """A broker of its own run by deploy/kafka/kafka.sh: its state dir and ports."""

    state_dir: Path
    port: int
    controller_port: int

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def sh(self, *args: str) -> float:
        """``kafka.sh ARGS`` for this broker; the seconds it took (raises if it fails)."""
        env = {**os.environ, "SNOOPWATCH_STATE_DIR": str(self.state_dir),
               "KAFKA_PORT": str(self.port), "KAFKA_CONTROLLER_PORT": str(self.controller_port)}
        t0 = time.monotonic()
        done = subprocess.run(["bash", str(KAFKA_SH), *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return time.monotonic() - t0


def kafka_lib() -> Path | None:
    """Kafka jars to reuse (``SNOOPWATCH_KAFKA_LIB``, else this checkout's state/kafka/lib), so
    that a dedicated broker's fresh state dir does not fetch them with Maven again."""
    lib = Path(os.environ.get("SNOOPWATCH_KAFKA_LIB", REPO / "state" / "kafka" / "lib"))
    return lib.resolve() if lib.is_dir() else None


@contextlib.contextmanager
def dedicated_broker(state_dir: Path) -> Iterator[Broker]:
    """Start a broker on free ports with its own state under ``state_dir``; wipe and stop it
    at the end. Restarting it disturbs no other test or user of the shared broker."""
    kafka = state_dir / "kafka"
    kafka.mkdir(parents=True, exist_ok=True)
    lib = kafka_lib()
    if lib is not None and not (kafka / "lib").exists():
        (kafka / "lib").symlink_to(lib, target_is_directory=True)
    port = free_port()
    while (controller := free_port()) == port:
        pass
    broker = Broker(state_dir, port, controller)
    broker.sh("up")
    try:
        yield broker
    finally:
        broker.sh("down", "--wipe")
        if (kafka / "lib").is_symlink():
            (kafka / "lib").unlink()  # never let a later rmtree reach the shared jars


def run_broker_restart(case: Case, workdir: Path, seed: int,
                       checkpoint_interval_s: float = 1.0, outage_s: float = 0.0) -> Outcome:
    """On a dedicated broker: when the worker's input position reaches a seeded offset, the
    broker is stopped (``kafka.sh down``: SIGTERM), left down ``outage_s`` more, and started
    again (``up``, data kept). A worker that exits meanwhile is restarted, as an operator's
    supervisor would; the story says whether that happened."""
    with dedicated_broker(workdir / "broker-state") as broker:
        run = prepare(case, workdir, checkpoint_interval_s, broker.url)
        target = random.Random(seed).randrange(run.total // 5, run.total * 3 // 5)
        log = workdir / "worker.log"
        w = spawn(run.settings, log)
        story = []
        try:
            pos = _wait(f"input offset {target}",
                        lambda: (p := w.offset(run.settings)) >= target and p,
                        w.proc, log, 300, 0.005)
            down_s = broker.sh("down")
            time.sleep(outage_s)  # the outage's length, not a wait for anything
            up_s = broker.sh("up")
            back = time.monotonic()
            story.append(f"broker stopped at offset {pos} (down {down_s:.1f}s, "
                         f"{'' if not outage_s else f'kept down {outage_s:g}s, '}"
                         f"up again {up_s:.1f}s)")
            restarts = 0
            while True:
                if w.proc.poll() is not None:  # the supervisor's part
                    story.append(f"worker exited with {w.proc.returncode}, restarted")
                    restarts += 1
                    if restarts > 3:
                        raise RuntimeError(f"worker keeps exiting:\n{log_tail(log)}")
                    w = spawn(run.settings, log)
                try:
                    finish(run, w)
                    break
                except RuntimeError:
                    if w.proc.poll() is None:
                        raise  # timed out, not exited
            if not restarts:
                story.append("the worker rode it out")
            story.append(f"caught up {time.monotonic() - back:.0f}s after the broker was back")
        finally:
            stop_process(w.proc, timeout=30)
        return compare(run, [], story)


def alert_copies(settings: Settings) -> list[bytes]:
    """Every alert sent (re-sends included), ``emitted_at`` left out, keys sorted."""
    out = []
    for msg in asyncio.run(read_all(settings, settings.alerts_topic)):
        a = orjson.loads(msg.value)
        a.pop("emitted_at", None)
        out.append(encode(a))
    return out


def alert_ids(settings: Settings) -> dict[str, bytes]:
    return {orjson.loads(a)["alert_id"]: a for a in alert_copies(settings)}


def dead_letter_problems(settings: Settings, case: Case) -> list[str]:
    """Origins not dead-lettered exactly once: every malformed input message (on whichever
    partition it went) and context entry once, nothing else."""
    origins: Counter = Counter()
    for msg in asyncio.run(read_all(settings, settings.dlq_topic)):
        src = orjson.loads(msg.value)["source"]
        origins[src["topic"], src["partition"], src["offset"]] += 1
    want = {(settings.input_topic, m.partition, m.offset)
            for m in asyncio.run(read_all(settings, settings.input_topic)) if m.key is None}
    assert len(want) == len(case.malformed_at)  # (only malformed lines have no key)
    want |= {(settings.context_topic, 0, o) for o in case.bad_context_at}
    return [f"{t}:{p}@{o} x{origins[t, p, o]}" for t, p, o in sorted(want | set(origins))
            if origins[t, p, o] != 1 or (t, p, o) not in want]


def scaleout(case: Case, workdir: Path, seed: int, partitions: int = 4,
             broker: str = BROKER, kill: bool = True, worker_ids: bool = True,
             **overrides: Any) -> dict[str, Any]:
    """1 worker, and 2 workers (started together; with ``kill``, one SIGKILLed at a seeded
    offset and restarted), on ``partitions`` partitions keyed by actor; their alerts (by id,
    the last copy sent) and replay's, and under ``"dead letters"`` each run's
    :func:`dead_letter_problems`. ``worker_ids``: each worker has a SNOOPWATCH_WORKER_ID, kept
    by its restart (else host:pid: the restart waits for the dead one's transaction to time
    out). ``overrides``: settings of the workers."""
    import uuid

    expected = replay_alerts(case, workdir)
    total = len(case.events)
    out: dict[str, Any] = {"replay": expected}
    copies: dict[str, list[bytes]] = {}
    story: dict[str, str] = {}
    dead_letters: dict[str, list[str]] = {}
    runs = (("1 worker", 1), ("2 workers, one killed" if kill else "2 workers", 2))
    for name, workers in runs:
        run = uuid.uuid4().hex[:8]
        settings = Settings(broker=broker, input_topic=f"s-{run}-events",
                            alerts_topic=f"s-{run}-alerts", dlq_topic=f"s-{run}-dlq",
                            context_topic=f"s-{run}-context",
                            app_id=f"snoopwatch-scaleout-{run}", data_dir=str(workdir),
                            partitions=partitions, checkpoint_interval_s=1.0,
                            session_timeout_s=6.0).replace(**overrides)
        asyncio.run(create_topics(settings, partitions))
        log = workdir / f"{name.split(',')[0].replace(' ', '-')}.log"
        procs = []
        for i in range(workers):
            s = settings.replace(web_port=free_port(),
                                 worker_id=f"w{i}" if worker_ids else "")
            procs.append((s, *start_worker(s, log)))
        try:
            for _, proc, url in procs:
                _wait("worker up", lambda url=url: bool(scrape(url)), proc, log, 90)
            if workers == 2:  # both in the group before the input arrives
                time.sleep(settings.session_timeout_s)
            asyncio.run(publish(settings, case, keyed=True))
            published = time.monotonic()
            if workers == 2 and kill:
                target = random.Random(seed).randrange(total // 4, total * 3 // 4)
                s, victim, url = procs[1]

                def consumed(procs: list = procs, target: int = target) -> float:
                    got = [scrape(u) for _, _, u in procs]
                    n = sum(m.get("snoopwatch_events_consumed_total", 0) for m in got if m)
                    return n if n >= target else 0

                at = _wait(f"{target} consumed", consumed, victim, log, 300, 0.005)
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                story[name] = f"killed at {at:.0f} of {total} messages consumed; "
                s = s.replace(web_port=free_port())
                procs[1] = (s, *start_worker(s, log))
            _wait("every input message committed",
                  lambda s=settings: asyncio.run(committed_all(s)) >= total, procs[0][1], log,
                  600, 0.5)
            took = time.monotonic() - published
            hopped = asyncio.run(read_all(settings, f"{settings.app_id}-events-by-actor"))
            story[name] = (story.get(name, "") + f"all committed {took:.0f} s after the input "
                           f"was published; {len(hopped)} events took the re-key hop")
        finally:
            for _, proc, _ in procs:
                stop_process(proc, timeout=30)
        copies[name] = alert_copies(settings)
        out[name] = {orjson.loads(a)["alert_id"]: a for a in copies[name]}
        dead_letters[name] = dead_letter_problems(settings, case)
    out["copies"], out["story"], out["dead letters"] = copies, story, dead_letters
    return out


async def committed_all(settings: Settings) -> int:
    """The group's committed offsets summed over the input topic's partitions; -1 while the
    by-actor topic (events that took the re-key hop) is not committed to its end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    offsets = await group_offsets(settings)
    by_actor = f"{settings.app_id}-events-by-actor"
    parts = await partitions_of(settings, by_actor)
    if parts:
        consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(by_actor, p) for p in parts])
        finally:
            await consumer.stop()
        done = {tp.partition: m.offset for tp, m in offsets.items() if tp.topic == by_actor}
        if any(end > done.get(tp.partition, 0) for tp, end in ends.items()):
            return -1
    return sum(m.offset for tp, m in offsets.items()
               if tp.topic == settings.input_topic and m.offset >= 0)


def print_scaleout(result: dict[str, Any]) -> None:
    ref = result["replay"]
    print(f"  replay: {len(ref)} alerts")
    for name, got in result.items():
        if name in ("replay", "copies", "story", "dead letters"):
            continue
        same = sum(1 for i in got if i in ref and got[i] == ref[i])
        print(f"  {name}: {len(got)} alerts; {same} identical to replay's, "
              f"{len(set(got) & set(ref)) - same} same id other contents, "
              f"{len(set(got) - set(ref))} not in replay, {len(set(ref) - set(got))} of "
              f"replay's missing")
        sent = result.get("copies", {}).get(name, [])
        resent = len(sent) - len(got)
        unlike = sum(1 for a in sent if ref.get(orjson.loads(a)["alert_id"]) != a)
        told = result.get("story", {}).get(name)
        wrong = result.get("dead letters", {}).get(name)
        if wrong:
            print(f"    dead letters not once per malformed message: {wrong}")
        print(f"    {len(sent)} sent ({resent} re-sent), {unlike} of them unlike replay's "
              f"alert of their id{'; ' + told if told else ''}")
        actors = {orjson.loads(v)["actor"] for v in got.values()}
        ref_actors = {orjson.loads(v)["actor"] for v in ref.values()}
        print(f"    actors alerted: {'the same as replay' if actors == ref_actors else ''}"
              f"{'' if actors == ref_actors else f'only here {sorted(actors - ref_actors)}, '}"
              f"{'' if actors == ref_actors else f'only in replay {sorted(ref_actors - actors)}'}")
        fields: Counter = Counter()
        for i in set(got) & set(ref):
            mine, theirs = orjson.loads(got[i]), orjson.loads(ref[i])
            fields.update(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if fields:
            print(f"    fields that differ under the same id: {dict(fields)}")
        for i in sorted(set(got) ^ set(ref)):
            a = orjson.loads(got.get(i) or ref[i])
            print(f"    {'only here' if i in got else 'only in replay'}: {a['actor']} "
                  f"{a['time']} score {a['score']}: {a['summary'][:100]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--employees", type=int, default=30)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--malformed", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1, help="first run's seed (run i: seed + i)")
    ap.add_argument("--checkpoint-interval", type=float, default=1.0)
    ap.add_argument("--keep", action="store_true", help="keep each run's files and logs")
    ap.add_argument("--mode", choices=MODES, default="kills",
                    help="kills: --kills SIGKILLs and restarts; handover: a second worker "
                    "joins, the one holding the partition is SIGKILLed; broker-restart: a "
                    "dedicated broker is stopped and started under load")
    ap.add_argument("--outage", type=float, default=0.0,
                    help="broker-restart: seconds the broker stays down between down and up")
    ap.add_argument("--scaleout", action="store_true",
                    help="4 partitions keyed by actor: 1 worker vs 2 (one killed) vs replay")
    ap.add_argument("--no-barrier", action="store_true",
                    help="scaleout: workers without the peer-ops barrier (as before it)")
    ap.add_argument("--idle-close", type=float, default=2.0,
                    help="scaleout: SNOOPWATCH_IDLE_CLOSE_S of the workers")
    args = ap.parse_args(argv)
    if args.scaleout:
        for i in range(args.runs):
            seed = args.seed + i
            cfg = SimConfig(seed=seed, employees=args.employees, days=args.days)
            tmp = tempfile.mkdtemp(prefix="snoopwatch-scaleout-")
            try:
                print(f"run {i + 1} (seed {seed}){f' [{tmp}]' if args.keep else ''}:",
                      flush=True)
                print_scaleout(scaleout(make_case(cfg, args.malformed, seed), Path(tmp), seed,
                                        peer_barrier=not args.no_barrier,
                                        idle_close_s=args.idle_close))
            finally:
                if not args.keep:
                    shutil.rmtree(tmp, ignore_errors=True)
        return 0
    exact = 0
    for i in range(args.runs):
        seed = args.seed + i
        cfg = SimConfig(seed=seed, employees=args.employees, days=args.days)
        tmp = tempfile.mkdtemp(prefix="snoopwatch-recovery-")
        case = make_case(cfg, args.malformed, seed)
        try:
            if args.mode == "handover":
                out = run_handover(case, Path(tmp), seed, args.checkpoint_interval)
            elif args.mode == "broker-restart":
                out = run_broker_restart(case, Path(tmp), seed, args.checkpoint_interval,
                                         args.outage)
            else:
                out = run_case(case, Path(tmp), args.kills, seed, args.checkpoint_interval)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        exact += out.exact
        print(f"run {i + 1:>2} (seed {seed}): {out.line()}", flush=True)
    what = {"kills": f"{args.kills} SIGKILLs each", "handover": "a worker joining, the "
            "holder SIGKILLed", "broker-restart": "the broker restarted"}[args.mode]
    print(f"{exact}/{args.runs} runs exact ({what}, "
          f"{args.employees} employees x {args.days} days, {args.malformed} malformed lines)")
    return 0 if exact == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
