"""The measuring processes ``bench.py`` starts, one per measurement, and a synthetic generator.

Each probe runs in a process of its own (``python benchmarks/probes.py PROBE ...``), times
itself from its first message (not from process start) and prints one JSON object per line
on stdout:

- ``bare``: a bare aiokafka consumer that only fetches and orjson-decodes each message
  (the ceiling for a Python consumer on this broker);
- ``readloop``: reads a JSONL file line by line and orjson-decodes each line (the ceiling
  for ``snoopwatch replay``);
- ``memory``: feeds a :class:`detectors.engine.Engine`, and the worker's per-actor bookkeeping
  beside it (:class:`stream.state.ActorStore`: offsets, the event-id window), a few events
  for each of K distinct actors and reports resident memory growth per actor at each K.

:class:`Synth` is a fast generator of valid SPEC §1 events with a realistic mix (support
agents working tickets, fraud investigators, analysts' reports and exports, engineers'
log searches), for actor counts the simulator cannot reach in a given number of events.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import time
from typing import Any

import orjson

from stream.kafka_security import kafka_kw
from stream.simulate import TimeFormatter

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MIN_MS = 60_000
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Role mix of the synthetic company (percent), like the simulator's.
ROLE_MIX = (("support_agent", 72), ("camera_tech", 6), ("fraud_investigator", 4),
            ("analyst", 6), ("engineer", 8), ("manager", 4))
_ROLE_TABLE = tuple(role for role, pct in ROLE_MIX for _ in range(pct))
CLIENTS = {"support_agent": "crm-console", "camera_tech": "crm-console",
           "fraud_investigator": "fraud-desk", "analyst": "bi-portal",
           "engineer": "admin-cli", "manager": "crm-console"}
_PROFILE_FIELDS = (["email"], ["phone"], ["email", "phone"], ["address"])


class Synth:
    """Valid SPEC §1 events for ``actors`` actors; an actor's traits are a function of its index.

    >>> s = Synth(1000, seed=1)
    >>> ev = s.event(5, 1_795_000_000_000, "x-1")
    >>> ev["actor"], ev["role"] == s.role(5), ev["time"]
    ('u0000005', True, '2026-11-18T11:06:40.000Z')
    >>> from detectors.events import parse_event
    >>> all(parse_event(s.event(i, 1_795_000_000_000 + i, f"e{i}")).actor for i in range(500))
    True
    """

    def __init__(self, actors: int, seed: int = 7, customers: int | None = None) -> None:
        self.actors = actors
        self.rng = random.Random(seed)
        self.customers = customers or max(5_000, 100 * actors)
        self.fmt = TimeFormatter()
        # Each actor's current ticket and customer (support work: a few events per ticket).
        self._ticket: dict[int, tuple[str, str]] = {}
        self._tickets = 0

    @staticmethod
    def name(i: int) -> str:
        return f"u{i:07d}"

    @staticmethod
    def role(i: int) -> str:
        return _ROLE_TABLE[(i * 2654435761 >> 7) % len(_ROLE_TABLE)]

    def team(self, i: int) -> str:
        return f"{self.role(i)}-{i % 16}"

    @staticmethod
    def ip(i: int) -> str:
        # Each team sits on its own office /24; hosts vary a little.
        return f"10.{(i % 16) + 1}.{(i >> 4) % 200 + 1}.{(i * 7) % 250 + 2}"

    def forget(self, i: int) -> None:
        """Drop the generator's own memory of actor ``i`` (its current ticket)."""
        self._ticket.pop(i, None)

    def _customer(self) -> str:
        return f"c{self.rng.randrange(self.customers):08d}"

    def event(self, i: int, t_ms: int, event_id: str) -> dict[str, Any]:
        rng = self.rng
        role = self.role(i)
        ev: dict[str, Any] = {"event_id": event_id, "time": self.fmt(t_ms),
                              "actor": self.name(i), "action": "read",
                              "resource_type": "customer_profile"}
        ticket: str | None = None
        r = rng.random()
        if role in ("support_agent", "camera_tech", "manager"):
            current = self._ticket.get(i)
            if current is None or rng.random() < 0.3:
                self._tickets += 1
                current = self._ticket[i] = (f"T{self._tickets:08d}", self._customer())
            ticket, ev["customer_id"] = current
            if r < 0.45:
                ev["fields"] = rng.choice(_PROFILE_FIELDS)
            elif r < 0.75:
                ev["resource_type"] = "order"
            elif r < 0.83:
                ev["action"] = "update"
                ev["fields"] = rng.choice(_PROFILE_FIELDS)
            elif r < 0.90:
                ev["resource_type"] = "address"
            elif r < 0.95:
                ev["resource_type"] = "payment_method"
            elif role == "camera_tech":
                ev["action"], ev["resource_type"] = "view_stream", "camera_stream"
                ev["bytes"] = rng.randint(1_000_000, 50_000_000)
            else:
                ev["action"], ev["resource_type"] = "download", "invoice"
                ev["bytes"] = rng.randint(20_000, 200_000)
            if rng.random() < 0.03:
                ticket = None  # a console that lost the ticket id
        elif role == "fraud_investigator":
            ev["customer_id"] = self._customer()
            ev["resource_type"] = "payment_method" if r < 0.4 else "customer_profile"
            if rng.random() < 0.2:
                ticket = f"F{rng.randrange(1_000_000):07d}"
        elif role == "analyst":
            ev["resource_type"] = "report"
            if r < 0.9:
                ev["action"] = "query"
                ev["records"] = rng.randint(10, 5_000)
            else:
                ev["action"] = "export"
                ev["records"] = rng.randint(100, 20_000)
                ev["bytes"] = ev["records"] * 200
        else:  # engineer
            if r < 0.97:
                ev["action"], ev["resource_type"] = "search", "logs"
                ev["records"] = rng.randint(1, 500)
            else:
                ev["customer_id"] = self._customer()
                ticket = f"INC{rng.randrange(100_000):06d}"
        ev["role"] = role
        ev["team"] = self.team(i)
        ev["source_ip"] = self.ip(i)
        ev["client"] = CLIENTS[role]
        if ticket is not None:
            ev["ticket"] = ticket
        return ev


# --- bare consumer ------------------------------------------------------------------------


async def bare_consumer(servers: str, topic: str, group: str, count: int, timeout_s: float
                        ) -> dict[str, Any]:
    """Fetch and orjson-decode ``count`` messages; time from the first message to the last."""
    from aiokafka import AIOKafkaConsumer

    loads = orjson.loads
    consumer = AIOKafkaConsumer(topic, **kafka_kw(servers), group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=True)
    await consumer.start()
    n = 0
    first = last = None
    deadline = time.monotonic() + timeout_s
    try:
        while n < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                continue
            if first is None:
                first = time.perf_counter()
            for msgs in batch.values():
                for msg in msgs:
                    loads(msg.value)
                n += len(msgs)
            last = time.perf_counter()
    finally:
        await consumer.stop()
    seconds = (last - first) if first is not None and last is not None else 0.0
    return {"events": n, "seconds": seconds, "complete": n >= count}


# --- read-and-decode loop -----------------------------------------------------------------


def read_loop(path: str) -> dict[str, Any]:
    """Read a JSONL file line by line and orjson-decode each line (replay's ceiling)."""
    loads = orjson.loads
    n = 0
    started = time.perf_counter()
    with open(path, "rb") as fh:
        for line in fh:
            loads(line)
            n += 1
    return {"events": n, "seconds": time.perf_counter() - started}


# --- memory per tracked actor -------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_SIZE


def mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_probe(checkpoints: list[int], per_actor: int, limit_bytes: int,
                 min_free_bytes: int = 1 << 30, emit: Any = None) -> list[dict[str, Any]]:
    """RSS growth per tracked actor after feeding an Engine (and the worker's ActorStore)
    ``per_actor`` events of each actor.

    The events go through the same decoding as the worker's (``decode_event`` of orjson
    bytes), so the engine keeps the strings a worker would. Stops early, with a
    ``stopped`` message, when resident memory would pass ``limit_bytes`` or the machine's
    available memory falls under ``min_free_bytes``.
    """
    from detectors.engine import Engine
    from detectors.events import decode_event
    from detectors.settings import Settings
    from stream.metrics import Metrics
    from stream.state import ActorStore

    emit = emit or (lambda _rec: None)
    targets = sorted(set(checkpoints))
    total = targets[-1]
    base_ms = 1_795_000_000_000
    dumps = orjson.dumps
    # Warm up on a throwaway engine first, so that lazy imports (river, numpy) and
    # one-off caches are in the baseline, not in the per-actor figure.
    warm, synth = Engine(Settings()), Synth(200, seed=3)
    for j in range(200):
        for k in range(per_actor):
            warm.process(decode_event(dumps(synth.event(j, base_ms + k * HOUR_MS, f"w{j}-{k}"))))
    del warm, synth
    synth = Synth(total, seed=11)
    engine = Engine(Settings())
    # What the worker keeps per actor beside the engine's state: offsets and the id window.
    store = ActorStore(Settings(), engine, Metrics())
    step = max(1, DAY_MS // 4 // max(total, 1))  # all actors start within ~6 h of event time
    gap = 40 * MIN_MS                            # an actor's events 40 min apart: 2+ hours
    gc.collect()
    rss0 = rss_bytes()
    started = time.perf_counter()
    out: list[dict[str, Any]] = []
    pending = list(targets)
    for j in range(total):
        t0 = base_ms + j * step
        for k in range(per_actor):
            ev = decode_event(dumps(synth.event(j, t0 + k * gap, f"m{j}-{k}")))
            offset = j * per_actor + k
            store.admit(ev.actor, ev.event_id, j % 4, offset, (j % 4, offset))
            engine.process(ev)
        store.dirty.clear()  # as a checkpoint would
        synth.forget(j)
        done = j + 1
        if done == pending[0]:
            gc.collect()
            rss = rss_bytes()
            rec = {"actors": done, "tracked": engine.tracked_actors,
                   "rss_bytes": rss, "growth_bytes": rss - rss0,
                   "bytes_per_actor": (rss - rss0) / done,
                   "events": done * per_actor, "seconds": time.perf_counter() - started}
            out.append(rec)
            emit(rec)
            pending.pop(0)
            if not pending:
                break
        elif done % 5000 == 0:
            rss = rss_bytes()
            avail = mem_available()
            # Project the next checkpoint from the growth so far.
            projected = rss0 + (rss - rss0) / done * pending[0]
            why = None
            if rss > limit_bytes:
                why = f"resident memory {rss / 2**30:.1f} GiB passed the limit"
            elif projected > limit_bytes and done >= min(50_000, pending[0] // 10):
                why = (f"{pending[0]:,} actors would need ~{projected / 2**30:.1f} GiB "
                       f"(limit {limit_bytes / 2**30:.1f} GiB)")
            elif avail is not None and avail < min_free_bytes:
                why = f"only {avail / 2**30:.1f} GiB of memory left on the machine"
            if why:
                gc.collect()
                rss = rss_bytes()
                rec = {"actors": done, "tracked": engine.tracked_actors, "rss_bytes": rss,
                       "growth_bytes": rss - rss0, "bytes_per_actor": (rss - rss0) / done,
                       "events": done * per_actor, "seconds": time.perf_counter() - started,
                       "stopped": f"stopped at {done:,} actors: {why}",
                       "wanted": pending[0]}
                out.append(rec)
                emit(rec)
                break
    return out


# --- command line -------------------------------------------------------------------------


def _print(rec: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(rec).decode() + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="probe", required=True)
    b = sub.add_parser("bare")
    b.add_argument("--servers", required=True)
    b.add_argument("--topic", required=True)
    b.add_argument("--group", required=True)
    b.add_argument("--count", type=int, required=True)
    b.add_argument("--timeout", type=float, default=1800)
    r = sub.add_parser("readloop")
    r.add_argument("path")
    m = sub.add_parser("memory")
    m.add_argument("--actors", required=True, help="comma-separated actor counts")
    m.add_argument("--per-actor", type=int, default=3)
    m.add_argument("--limit-gb", type=float, default=16.0)
    args = p.parse_args(argv)
    if args.probe == "bare":
        _print(asyncio.run(bare_consumer(args.servers, args.topic, args.group, args.count,
                                         args.timeout)))
    elif args.probe == "readloop":
        _print(read_loop(args.path))
    else:
        counts = [int(x) for x in args.actors.split(",") if x.strip()]
        memory_probe(counts, args.per_actor, int(args.limit_gb * 2**30), emit=_print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
