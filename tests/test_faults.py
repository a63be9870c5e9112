"""Broker faults (issue 4, part 5): the broker stops for 30 s under a running worker.

The test runs a private single-node broker of its own (deploy/kafka/kafka.sh with its own
state dir and free ports), so that stopping it disturbs nobody; it reuses the jars of the
suite's broker when it finds them, and always stops its broker and worker.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.settings import Settings, bootstrap_servers
from stream.demo import free_port, scrape
from stream.simulate import SimConfig, generate
from stream.state import ENGINE_KEY, state_topic_name
from stream.topics import create_topics
from tests.procs import REPO, borrow_kafka_jars, fresh_settings, wait_until
from tests.test_reliability import read_topic, send, settled, start_worker

pytestmark = pytest.mark.kafka

SIM = SimConfig(seed=101, agents=16, days=4, insiders=1)
OUTAGE_S = 30.0


class PrivateBroker:
    """``kafka.sh`` on a state dir and ports of its own; ``stop()``/``start()`` at will."""

    def __init__(self, state: Path) -> None:
        port, controller = free_port(), free_port()
        while controller == port:
            controller = free_port()
        self.url = f"kafka://127.0.0.1:{port}"
        self.env = {**os.environ, "SNOOPWATCH_STATE_DIR": str(state), "KAFKA_PORT": str(port),
                    "KAFKA_CONTROLLER_PORT": str(controller)}
        borrow_kafka_jars(state)

    def _run(self, *args: str) -> None:
        out = subprocess.run(["bash", str(REPO / "deploy/kafka/kafka.sh"), *args], env=self.env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"kafka.sh {' '.join(args)}:\n{out.stdout}{out.stderr}"

    def start(self) -> None:
        self._run("up")

    def stop(self) -> None:
        self._run("down")


def paced_send(settings: Settings, msgs: list[tuple[bytes, bytes]], per_s: float,
               errors: list[BaseException]) -> threading.Thread:
    """Produce ``msgs`` at about ``per_s`` a second from a thread, riding out an outage.

    Idempotent, with a request timeout beyond the outage: a batch retried after the broker
    is back is written once, so the input holds each event exactly once.
    """
    async def run() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings.broker),
                                    enable_idempotence=True, request_timeout_ms=180_000,
                                    linger_ms=10)
        await producer.start()
        try:
            futures: list[Any] = []
            chunk = max(1, int(per_s / 10))
            for i in range(0, len(msgs), chunk):
                futures += [await producer.send(settings.input_topic, value=v, key=k)
                            for k, v in msgs[i:i + chunk]]
                await asyncio.sleep(0.1)
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    def main() -> None:
        try:
            asyncio.run(run())
        except BaseException as err:  # reported by the test
            errors.append(err)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "kafka-state")
    try:
        broker.start()  # inside: a broker that started but did not get ready is stopped too
        yield broker
    finally:
        broker.stop()


def test_the_worker_rides_out_a_30s_broker_outage_without_losing_events(
        tmp_path: Path, private_broker: PrivateBroker) -> None:
    # Checkpoints every second, so that the outage comes after one and mid-stream.
    settings = fresh_settings(tmp_path, broker=private_broker.url, partitions=2,
                              checkpoint_interval_s=1.0)
    asyncio.run(create_topics(settings, 2))
    events = [ev for ev, _ in generate(SIM)]
    # Half the teams keyed by actor (detected where they are read), half by team (the
    # by-actor hop): both paths ride out the outage.
    by_actor = sorted({ev["team"] for ev in events})[::2]
    msgs = [((ev["actor"] if ev["team"] in by_actor else ev["team"]).encode(),
             orjson.dumps(ev)) for ev in events]
    half = int(len(msgs) * 0.8)
    proc, url = start_worker(settings, tmp_path / "worker.log")
    errors: list[BaseException] = []
    try:
        # Events keep arriving (at about half the worker's speed, so that it is busy, not
        # backlogged); the broker stops once the worker has checkpointed, mid-stream.
        sender = paced_send(settings, msgs[:half], 800, errors)
        wait_until("mid-stream", lambda: (m := scrape(url)).get(
            "snoopwatch_events_processed_total", 0) >= 300 and m.get(
            "snoopwatch_state_checkpointed_actors_total", 0) >= 1, 60, 0.05)
        stopped_at = scrape(url).get("snoopwatch_events_processed_total", 0)
        private_broker.stop()
        time.sleep(OUTAGE_S)
        assert proc.poll() is None, "the worker died while the broker was away"
        private_broker.start()
        restarted = time.monotonic()
        sender.join(240)
        assert not sender.is_alive() and not errors, errors
        asyncio.run(send(settings, msgs[half:], batch=True))
        audit = wait_until("every event processed or dead-lettered after the outage",
                           lambda: settled(settings), 240, 1)
        recovered_s = time.monotonic() - restarted
        m = scrape(url)
        assert proc.poll() is None, "the worker needed a restart"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    print(f"\nbroker outage: stopped at {stopped_at:.0f}/{half} processed, down {OUTAGE_S:.0f}s; "
          f"all caught up {recovered_s:.1f}s after the restart; processed "
          f"{m['snoopwatch_events_processed_total']:.0f}, duplicates "
          f"{m.get('snoopwatch_events_duplicate_total', 0):.0f}, replayed "
          f"{m.get('snoopwatch_events_replayed_total', 0):.0f}\n{audit.table()}")
    assert stopped_at < half, "the first half was done before the broker stopped"
    assert sum(p.forwarded + p.dead_lettered for p in audit.input) == len(msgs)
    # Nothing lost, nothing counted twice: each actor's state learned each of its events once.
    final = {r.key: r.value for r in asyncio.run(read_topic(
        settings, state_topic_name(settings), committed=True)) if r.key != ENGINE_KEY}
    learned = {k.decode(): pickle.loads(v)["state"].signals["first_seen"].n
               for k, v in final.items()}
    assert learned == dict(Counter(ev["actor"] for ev in events))
