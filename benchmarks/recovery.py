"""Exact recovery after SIGKILL at seeded random moments, on the real broker (issue 15).

Per run: a company (``snoopwatch simulate``'s, seeded per run) with its context file and
``--malformed`` malformed lines (plus two malformed context entries) goes to a fresh
1-partition input topic; ``snoopwatch worker`` is killed with SIGKILL ``--kills`` times, each
when its observed input position (the group's committed offset at its start + the messages it
consumed since) reaches a seeded random offset, and restarted; then every message of the
alerts and dead-letter topics is compared with an uninterrupted ``snoopwatch replay`` of the
same files. A run is *exact* when the set of alert ids equals replay's, every alert sent
(re-sends included) equals replay's alert of its id byte for byte but for ``emitted_at``, and
every malformed message (and context entry) is dead-lettered exactly once per offset.

    SNOOPWATCH_TEST_BROKER=kafka://127.0.0.1:9092 \\
        .venv/bin/python benchmarks/recovery.py --runs 20 --kills 3 --employees 30 --days 4

``tests/test_recovery.py`` runs one short case of it in the suite.

``--scaleout`` measures instead what issue 15 item 2 is about (no fix here): the same input on
4 partitions keyed by actor, run by 1 worker, and by 2 workers of which one is SIGKILLed at a
seeded offset and restarted; each run's alert ids against replay's and each other's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
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
from stream.processes import stop_process, wait_ready
from stream.replay import replay
from stream.simulate import SimConfig, context_entries, generate
from stream.topics import create_topics

REPO = Path(__file__).resolve().parent.parent
BROKER = os.environ.get("SNOOPWATCH_TEST_BROKER", "kafka://127.0.0.1:9092")
MALFORMED = [b"{oops", b"[]", b"null", b'{"event_id": "x"}', b"\xff\xfe not utf-8",
             b'{"event_id": "y", "time": "soon", "actor": "a", "action": "read", '
             b'"resource_type": "order"}', b'"just a string"']
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
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for msgs in batch.values():
                got.extend(msgs)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
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
    env = {**os.environ, **settings.to_env()}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    return proc, f"http://127.0.0.1:{settings.web_port}/metrics"


def _wait(what: str, check: Any, proc: subprocess.Popen, log: Path, timeout_s: float,
          every_s: float = 0.2) -> Any:
    return wait_ready(what, check, proc, log, timeout_s, goal=f"reach {what}", every_s=every_s)


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

    @property
    def exact(self) -> bool:
        return not (self.ids_missing or self.ids_extra or self.differing or self.dlq_problems)

    def line(self) -> str:
        what = "exact" if self.exact else (
            f"NOT exact: missing {self.ids_missing}, extra {self.ids_extra}, differing "
            f"{self.differing}, dead letters {self.dlq_problems}")
        return (f"killed at offsets {self.kills_at}; {self.replay_alerts} alerts in replay, "
                f"{self.resent} re-sent identically; {what} ({self.seconds:.0f}s)")


def run_case(case: Case, workdir: Path, kills: int, seed: int,
             checkpoint_interval_s: float = 1.0, broker: str = BROKER) -> Outcome:
    """Publish ``case``, run the worker with ``kills`` seeded SIGKILLs, compare with replay."""
    import uuid

    started = time.monotonic()
    expected = replay_alerts(case, workdir)
    run = uuid.uuid4().hex[:8]
    settings = Settings(broker=broker, input_topic=f"r-{run}-events",
                        alerts_topic=f"r-{run}-alerts", dlq_topic=f"r-{run}-dlq",
                        context_topic=f"r-{run}-context", app_id=f"snoopwatch-recovery-{run}",
                        data_dir=str(workdir), partitions=1,
                        checkpoint_interval_s=checkpoint_interval_s)
    asyncio.run(create_topics(settings, 1))
    asyncio.run(publish(settings, case))
    total = len(case.events)
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(total // 10, total * 9 // 10), kills))
    log = workdir / "worker.log"
    kills_at = []
    for target in targets:
        base = asyncio.run(committed(settings))
        settings = settings.replace(web_port=free_port())
        proc, url = start_worker(settings, log)
        try:
            def reached(url: str = url, base: int = base, target: int = target) -> float:
                m = scrape(url)
                pos = base + m.get("snoopwatch_events_consumed_total", 0) if m else 0
                return pos if m and pos >= target else 0

            pos = _wait(f"input offset {target}", reached, proc, log, 300, 0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills_at.append(int(pos))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    settings = settings.replace(web_port=free_port())
    proc, url = start_worker(settings, log)
    try:
        def done() -> bool:
            m = scrape(url)
            return bool(m) and asyncio.run(committed(settings)) >= total
        _wait("every input message committed", done, proc, log, 600, 0.5)
    finally:
        stop_process(proc, timeout=30)
    out = Outcome(kills_at, len(expected))
    sent = Counter()
    for msg in asyncio.run(read_all(settings, settings.alerts_topic)):
        a = orjson.loads(msg.value)
        a.pop("emitted_at", None)
        sent[a["alert_id"]] += 1
        if a["alert_id"] in expected and encode(a) != expected[a["alert_id"]]:
            out.differing.append(a["alert_id"])
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
    out.seconds = time.monotonic() - started
    return out


def alert_ids(settings: Settings) -> dict[str, bytes]:
    out = {}
    for msg in asyncio.run(read_all(settings, settings.alerts_topic)):
        a = orjson.loads(msg.value)
        a.pop("emitted_at", None)
        out[a["alert_id"]] = encode(a)
    return out


def scaleout(case: Case, workdir: Path, seed: int, partitions: int = 4,
             broker: str = BROKER) -> dict[str, Any]:
    """1 worker, and 2 workers (one SIGKILLed at a seeded offset and restarted), on
    ``partitions`` partitions keyed by actor; their alert ids and replay's."""
    import uuid

    expected = replay_alerts(case, workdir)
    total = len(case.events)
    out: dict[str, Any] = {"replay": expected}
    for name, workers in (("1 worker", 1), ("2 workers, one killed", 2)):
        run = uuid.uuid4().hex[:8]
        settings = Settings(broker=broker, input_topic=f"s-{run}-events",
                            alerts_topic=f"s-{run}-alerts", dlq_topic=f"s-{run}-dlq",
                            context_topic=f"s-{run}-context",
                            app_id=f"snoopwatch-scaleout-{run}", data_dir=str(workdir),
                            partitions=partitions, checkpoint_interval_s=1.0,
                            session_timeout_s=6.0)
        asyncio.run(create_topics(settings, partitions))
        log = workdir / f"{name.split(',')[0].replace(' ', '-')}.log"
        procs = []
        for _ in range(workers):
            s = settings.replace(web_port=free_port())
            procs.append((s, *start_worker(s, log)))
        try:
            for _, proc, url in procs:
                _wait("worker up", lambda url=url: bool(scrape(url)), proc, log, 90)
            if workers == 2:  # both in the group before the input arrives
                time.sleep(settings.session_timeout_s)
            asyncio.run(publish(settings, case, keyed=True))
            if workers == 2:
                target = random.Random(seed).randrange(total // 4, total * 3 // 4)
                s, victim, url = procs[1]

                def consumed(procs: list = procs, target: int = target) -> float:
                    got = [scrape(u) for _, _, u in procs]
                    n = sum(m.get("snoopwatch_events_consumed_total", 0) for m in got if m)
                    return n if n >= target else 0

                _wait(f"{target} consumed", consumed, victim, log, 300, 0.005)
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                s = s.replace(web_port=free_port())
                procs[1] = (s, *start_worker(s, log))
            _wait("every input message committed",
                  lambda s=settings: asyncio.run(committed_all(s)) >= total, procs[0][1], log,
                  600, 0.5)
        finally:
            for _, proc, _ in procs:
                stop_process(proc, timeout=30)
        out[name] = alert_ids(settings)
    return out


async def committed_all(settings: Settings) -> int:
    """The group's committed offsets summed over the input topic's partitions."""
    offsets = await group_offsets(settings)
    return sum(m.offset for tp, m in offsets.items()
               if tp.topic == settings.input_topic and m.offset >= 0)


def print_scaleout(result: dict[str, Any]) -> None:
    ref = result["replay"]
    print(f"  replay: {len(ref)} alerts")
    for name, got in result.items():
        if name == "replay":
            continue
        same = sum(1 for i in got if i in ref and got[i] == ref[i])
        print(f"  {name}: {len(got)} alerts; {same} identical to replay's, "
              f"{len(set(got) & set(ref)) - same} same id other contents, "
              f"{len(set(got) - set(ref))} not in replay, {len(set(ref) - set(got))} of "
              f"replay's missing")
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
    ap.add_argument("--scaleout", action="store_true",
                    help="4 partitions keyed by actor: 1 worker vs 2 (one killed) vs replay")
    args = ap.parse_args(argv)
    if args.scaleout:
        for i in range(args.runs):
            seed = args.seed + i
            cfg = SimConfig(seed=seed, employees=args.employees, days=args.days)
            tmp = tempfile.mkdtemp(prefix="snoopwatch-scaleout-")
            try:
                print(f"run {i + 1} (seed {seed}):", flush=True)
                print_scaleout(scaleout(make_case(cfg, args.malformed, seed), Path(tmp), seed))
            finally:
                if not args.keep:
                    shutil.rmtree(tmp, ignore_errors=True)
        return 0
    exact = 0
    for i in range(args.runs):
        seed = args.seed + i
        cfg = SimConfig(seed=seed, employees=args.employees, days=args.days)
        tmp = tempfile.mkdtemp(prefix="snoopwatch-recovery-")
        try:
            out = run_case(make_case(cfg, args.malformed, seed), Path(tmp), args.kills, seed,
                           args.checkpoint_interval)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        exact += out.exact
        print(f"run {i + 1:>2} (seed {seed}): {out.line()}", flush=True)
    print(f"{exact}/{args.runs} runs exact ({args.kills} SIGKILLs each, "
          f"{args.employees} employees x {args.days} days, {args.malformed} malformed lines)")
    return 0 if exact == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
