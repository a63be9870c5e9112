"""Exact recovery on the real broker (issue 15): SIGKILLs, a handover, a broker restart.

A 1-partition company with its context file, 20 malformed lines and two malformed context
entries. Every alert sent must equal an uninterrupted ``snoopwatch replay``'s alert of its id
byte for byte but for ``emitted_at`` (re-sends included), the set of alert ids must be
replay's, and every malformed message must be dead-lettered exactly once per offset, after:

- ``snoopwatch worker`` killed twice, each when its observed input offset
  (``snoopwatch_input_offset``) reaches a seeded random target (not a sleep, not just after a
  checkpoint), and restarted;
- a second worker joining the group at a seeded offset, then the one holding the partition
  SIGKILLed at a later seeded offset: the other takes it over and finishes;
- the broker (a dedicated one: restarting the shared broker would disturb other tests)
  stopped and started again at a seeded offset while the worker runs;
- 4 partitions keyed by actor: 1 worker, and 2 workers of which one is SIGKILLed at a
  seeded count of consumed messages and restarted under its SNOOPWATCH_WORKER_ID (which
  aborts the transaction it left open at once, rather than after the timeout).

The long versions: ``benchmarks/recovery.py --mode kills|handover|broker-restart`` and
``--scaleout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import orjson
import pytest

from benchmarks.recovery import (
    Outcome,
    make_case,
    run_broker_restart,
    run_case,
    run_handover,
    scaleout,
)
from detectors.engine import Engine
from detectors.settings import Settings
from stream.kafka_security import client_kwargs
from stream.metrics import Metrics
from stream.simulate import SimConfig
from stream.state import ActorStore
from tests.procs import BROKER, require_broker

pytestmark = pytest.mark.kafka


def assert_exact(out: Outcome) -> None:
    assert out.replay_alerts > 0
    assert not out.ids_missing, f"alerts replay raises that the worker never sent: {out.line()}"
    assert not out.ids_extra, f"alerts the worker invented: {out.line()}"
    assert not out.differing, f"alerts sent with other contents than replay's: {out.line()}"
    assert not out.dlq_problems, f"dead letters not once per offset: {out.line()}"


@pytest.mark.parametrize("seed", [5])
def test_sigkill_at_seeded_moments_gives_replays_alerts_and_dead_letters_once(
        tmp_path: Path, seed: int) -> None:
    require_broker()
    cfg = SimConfig(seed=seed, employees=30, days=4)
    out = run_case(make_case(cfg, 20, seed), tmp_path, kills=2, seed=seed, broker=BROKER)
    print(f"\nrecovery: {out.line()}")
    assert len(out.kills_at) == 2
    assert_exact(out)


@pytest.mark.parametrize("seed", [6])
def test_a_worker_joining_then_the_holder_sigkilled_gives_replays_alerts(
        tmp_path: Path, seed: int) -> None:
    require_broker()
    cfg = SimConfig(seed=seed, employees=30, days=8)  # the join lands mid-stream
    out = run_handover(make_case(cfg, 200, seed), tmp_path, seed, broker=BROKER)
    print(f"\nhandover: {out.line()}")
    assert len(out.kills_at) == 1 and "finished" in out.story[-3]
    # the survivor took over from the dead holder's checkpoints, not from nothing
    assert not out.story[-2].endswith(" restored 0 state records"), out.line()
    # no event of the one partition forwarded by a worker that had it taken away
    assert out.story[-1].startswith("0 events took"), out.line()
    assert_exact(out)


@pytest.mark.parametrize("seed", [7])
def test_broker_restarted_under_load_gives_replays_alerts(tmp_path: Path, seed: int) -> None:
    cfg = SimConfig(seed=seed, employees=30, days=4)
    out = run_broker_restart(make_case(cfg, 20, seed), tmp_path, seed)
    print(f"\nbroker restart: {out.line()}")
    assert out.story[0].startswith("broker stopped at offset")
    assert_exact(out)


@pytest.mark.parametrize("seed", [3])
def test_four_partitions_one_worker_and_two_with_one_sigkilled_give_replays_alerts(
        tmp_path: Path, seed: int) -> None:
    require_broker()
    case = make_case(SimConfig(seed=seed, employees=30, days=3), 10, seed)
    result = scaleout(case, tmp_path, seed, broker=BROKER, idle_close_s=2.0)
    ref = result["replay"]
    print(f"\nscale-out: {result['story']}")
    assert len(ref) >= 3, "too few alerts in replay to compare"
    for name in ("1 worker", "2 workers, one killed"):
        got = result[name]
        assert sorted(got) == sorted(ref), f"{name}: ids {sorted(got)} vs replay {sorted(ref)}"
        unlike = [orjson.loads(a)["alert_id"] for a in result["copies"][name]
                  if ref.get(orjson.loads(a)["alert_id"]) != a]
        assert not unlike, f"{name}: alerts sent unlike replay's of their id: {unlike}"
        assert not result["dead letters"][name], f"{name}: {result['dead letters'][name]}"
    assert "killed at" in result["story"]["2 workers, one killed"]


def test_a_restart_under_its_worker_id_aborts_the_transaction_its_dead_self_left_open(
        ) -> None:
    """A transaction left open (a worker killed mid-epoch) is aborted as soon as a worker of
    the same SNOOPWATCH_WORKER_ID starts: a restore reads the partition to its end without
    waiting for the broker's timeout (60 s for the dead one; the waiting restore gives up
    after 1 + 10 s here and would return the offset before the open transaction)."""
    require_broker()
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    run = uuid.uuid4().hex[:8]
    s = Settings(broker=BROKER, app_id=f"snoopwatch-fence-{run}", partitions=1,
                 worker_id="worker-a", peer_barrier=False)

    async def scenario() -> int:
        store = ActorStore(s.replace(transaction_timeout_s=1), Engine(s), Metrics())
        await store.ensure_topic()
        dead = AIOKafkaProducer(**client_kwargs(s), transactional_id=store.transactional_id,
                                transaction_timeout_ms=60_000, enable_idempotence=True)
        await dead.start()
        await dead.begin_transaction()
        await (await dead.send(store.topic, b"half an epoch", key=b"a", partition=0))
        tp = TopicPartition(store.topic, 0)
        consumer = AIOKafkaConsumer(**client_kwargs(s), isolation_level="read_committed")
        await consumer.start()
        try:
            await store.fence()  # what the worker does at start
            consumer.assign([tp])
            return await store._stable_end(consumer, tp)
        finally:
            await consumer.stop()
            await store.stop()
            with contextlib.suppress(Exception):
                await dead.stop()

    # past the dead one's record and the abort marker, not 0 (before its transaction)
    assert asyncio.run(scenario()) == 2
