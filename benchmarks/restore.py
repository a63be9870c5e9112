"""Restore time of worker state (issue 4): N actors' checkpoints read back from Kafka;
and what one checkpoint epoch of N changed actors costs (issue 15).

Writes N actor records (realistic states: actors of a simulated company after five days,
about 4 KB pickled each, reused under N distinct keys) to a fresh compacted state topic, then
times what a worker does when it is handed those partitions: ``ActorStore.load_partition``
for each (read to the end, records kept as bytes: the lazy restore that precedes the first
event), and unpickling every actor (what the first event of every actor costs in total).
Then every actor is marked changed and one epoch is written as the worker does
(``ActorStore.checkpoint``): the cut (pickling, during which the agents wait), its size, and
the transaction (send + commit), against the same records sent without a transaction (the
extra latency of transactions). The topic is deleted afterwards.

    .venv/bin/python benchmarks/restore.py --actors 10000 100000   # SNOOPWATCH_BROKER's broker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import stream.state as state_mod
from detectors.engine import Engine
from detectors.events import InvalidEvent, parse_event
from detectors.settings import Settings
from stream.kafka_security import client_kwargs
from stream.metrics import Metrics
from stream.pipeline import fewer_gc_passes, home_partition
from stream.simulate import SimConfig, generate
from stream.state import ActorMeta, ActorStore, encode_record, state_topic_name


def sample_records() -> tuple[list[bytes], dict]:
    """Checkpoint records of real actor states (a simulated company after five days), and
    that company's engine-wide state."""
    engine = Engine()
    for ev, _ in generate(SimConfig(seed=3, agents=40, days=5, insiders=0)):
        try:
            engine.process(parse_event(ev))
        except InvalidEvent:
            continue
    return ([encode_record(ActorMeta(0, 1000, {}), st) for st in engine.actors.values()],
            engine.shared_state())


async def plain_send(settings: Settings, records: list[tuple[int, bytes, bytes | None, int]]
                     ) -> float:
    """Seconds to send ``records`` as the worker did before epochs: idempotent, acks=all,
    no transaction."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(settings),
                                acks="all", linger_ms=5, max_request_size=16 << 20,
                                enable_idempotence=True)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(state_topic_name(settings), key=k, value=v, partition=p)
                   for p, k, v, _ in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def write(settings: Settings, n: int, samples: list[bytes]) -> tuple[float, int]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(settings),
                                linger_ms=20, max_batch_size=1 << 20, acks=1,
                                max_request_size=16 << 20)
    await producer.start()
    started, size = time.perf_counter(), 0
    try:
        futures = []
        for i in range(n):
            actor = f"actor-{i:07d}"
            blob = samples[i % len(samples)]
            size += len(blob)
            futures.append(await producer.send(
                state_topic_name(settings), key=actor.encode(), value=blob,
                partition=home_partition(actor, settings.partitions),
                headers=[("snoopwatch-last-ms", b"1793577600000")]))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started, size


async def drop_topic(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.delete_topics([state_topic_name(settings)])
    finally:
        await admin.close()


async def measure(base: Settings, n: int, samples: list[bytes], shared: dict
                  ) -> dict[str, float]:
    settings = base.replace(app_id=f"bench-restore-{uuid.uuid4().hex[:8]}")
    engine = Engine(settings)
    engine.load_shared(shared)
    store = ActorStore(settings, engine, Metrics())
    await store.ensure_topic()
    try:
        write_s, size = await write(settings, n, samples)
        rss0 = rss_mb()
        started = time.perf_counter()
        records = 0
        for p in range(settings.partitions):
            records += await store.load_partition(p)
        read_s = time.perf_counter() - started
        rss1 = rss_mb()
        started = time.perf_counter()
        for actor, (p, _, _) in list(store.blobs.items()):
            store.actor_meta(actor, p)
        unpickle_s = time.perf_counter() - started
        rss2 = rss_mb()
        assert records == n and engine.tracked_actors == n, (records, engine.tracked_actors)
        # One epoch of every actor, as the worker writes it (cut, then one transaction).
        store.dirty = set(store.meta)
        sent: list = []
        send = store._send
        send_s = [0.0]

        async def keep(recs: list, *rest: object) -> None:
            sent.extend(recs)
            t0 = time.perf_counter()
            await send(recs, *rest)
            send_s[0] = time.perf_counter() - t0

        store._send = keep  # type: ignore[method-assign]
        # Unpaced, to compare like with like (the worker spreads the send out, agents running).
        yield_was, state_mod.CHECKPOINT_YIELD = state_mod.CHECKPOINT_YIELD, 0.0
        started = time.perf_counter()
        try:
            await store.checkpoint()
        finally:
            state_mod.CHECKPOINT_YIELD = yield_was
        epoch_s = time.perf_counter() - started
        cut_s, _, epoch_bytes = store.last_cut
        plain_s = await plain_send(settings, sent)
    finally:
        await store.stop()
        await drop_topic(settings)
    return {"actors": n, "mb": size / 1e6, "write_s": write_s, "read_s": read_s,
            "unpickle_s": unpickle_s, "bytes_mb": rss1 - rss0, "states_mb": rss2 - rss0,
            "cut_s": cut_s, "epoch_s": epoch_s, "epoch_mb": epoch_bytes / 1e6,
            "pickle_s": epoch_s - cut_s - send_s[0], "txn_s": send_s[0], "plain_s": plain_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--actors", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args(argv)
    base = Settings.from_env(partitions=args.partitions)
    samples, shared = sample_records()
    avg = sum(map(len, samples)) / len(samples)
    print(f"broker {base.broker}, {args.partitions} partitions, {len(samples)} sample states "
          f"of {avg / 1000:.1f} kB on average, load average {os.getloadavg()[0]:.1f}")
    print(f"{'actors':>8} {'topic MB':>9} {'read (lazy) s':>14} {'+ unpickle all s':>17} "
          f"{'total s':>8} {'actors/s':>9} {'RSS bytes MB':>13} {'RSS states MB':>14} "
          f"{'kB/actor':>9}")
    for n in args.actors:
        with fewer_gc_passes():  # the worker's GC thresholds
            r = asyncio.run(measure(base, n, samples, shared))
        total = r["read_s"] + r["unpickle_s"]
        print(f"{n:>8} {r['mb']:>9.0f} {r['read_s']:>14.2f} {r['unpickle_s']:>17.2f} "
              f"{total:>8.2f} {n / total:>9.0f} {r['bytes_mb']:>13.0f} {r['states_mb']:>14.0f} "
              f"{r['states_mb'] * 1e3 / n:>9.1f}",
              flush=True)
        print(f"{'':>8} one epoch of all {n} actors: {r['epoch_mb']:.0f} MB; cut (agents "
              f"wait) {r['cut_s']:.2f}s; pickling (in slices) {r['pickle_s']:.2f}s; "
              f"transaction (send + commit) {r['txn_s']:.2f}s vs "
              f"{r['plain_s']:.2f}s without one (+{r['txn_s'] - r['plain_s']:.2f}s), unpaced",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
