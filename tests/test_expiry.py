"""Bounded memory (issue 4, part 6): actors idle past SNOOPWATCH_ACTOR_TTL_S are expired.

In the core (``Engine.expire_idle``, event time), in the worker's store (tombstones on the
compacted state topic, restored-but-untouched records too), and in a real worker.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.engine import DAY_MS, Engine
from detectors.events import parse_event
from detectors.settings import Settings
from stream.metrics import Metrics
from stream.state import ENGINE_KEY, LAST_MS_HEADER, ActorStore, state_topic_name
from stream.topics import create_topics
from tests.procs import fresh_settings, require_broker, wait_until
from tests.test_state import captured_sends

T0 = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC


def event(actor: str, i: int, t_ms: int) -> dict[str, Any]:
    return {"event_id": f"{actor}-{i}", "time": t_ms, "actor": actor, "role": "support_agent",
            "team": "support-a", "action": "read", "resource_type": "customer_profile",
            "customer_id": f"c{i}", "ticket": f"T{i}", "client": "crm",
            "source_ip": "10.1.2.3"}


def test_the_engine_forgets_actors_idle_past_the_ttl_in_event_time() -> None:
    engine = Engine(Settings(actor_ttl_s=7 * 86400))
    for i in range(20):
        engine.process(parse_event(event("ann", i, T0 + i * 60_000)))
    engine.process(parse_event(event("bob", 0, T0 + 6 * DAY_MS)))
    assert engine.expire_idle(T0 + 6 * DAY_MS) == []
    # Eight days after ann's last event, six after bob's: only ann goes.
    assert engine.expire_idle(T0 + 8 * DAY_MS) == ["ann"]
    assert set(engine.actors) == {"bob"}
    # ann returns: a fresh state, judged against her peers until she has a history again.
    verdict = engine.process(parse_event(event("ann", 99, T0 + 8 * DAY_MS)))
    assert verdict.alert is None and engine.actors["ann"].signals["first_seen"].n == 1
    assert Engine(Settings(actor_ttl_s=0)).expire_idle(T0 * 10) == []  # 0: never


def test_the_store_tombstones_expired_actors_and_untouched_restored_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.state

    monkeypatch.setattr(stream.state, "EXPIRE_EVERY_S", 0.0)
    engine = Engine(Settings(actor_ttl_s=86400))
    store = ActorStore(engine.settings, engine, Metrics())
    sent = captured_sends(store)
    store.loaded = {0, 1}
    # A record restored from the state topic, never touched since, last active at T0.
    store.blobs["carl"] = (1, b"not unpickled", T0)

    def feed(actor: str, i: int, t_ms: int, offset: int) -> None:
        ev = parse_event(event(actor, i, t_ms))
        assert store.admit(actor, ev.event_id, 0, offset) == "process"
        engine.process(ev)

    feed("ann", 0, T0, 0)
    asyncio.run(store.checkpoint())
    assert [r[1] for r in sent if r[1] != ENGINE_KEY] == [b"ann"]
    sent.clear()
    feed("bob", 0, T0 + 2 * DAY_MS, 1)  # event time moves two days on
    asyncio.run(store.checkpoint())
    tombstones = {(p, key) for p, key, blob, _ in sent if blob is None}
    assert tombstones == {(0, b"ann"), (1, b"carl")}
    assert set(engine.actors) == {"bob"} and set(store.meta) == {"bob"} and not store.blobs
    assert [r[3] for r in sent if r[1] == b"bob"] == [T0 + 2 * DAY_MS]  # last-event header


@pytest.mark.kafka
def test_a_worker_deletes_the_checkpoint_of_an_idle_actor(tmp_path: Path) -> None:
    from tests.test_reliability import read_topic, running, send

    require_broker()
    settings = fresh_settings(tmp_path, partitions=1, actor_ttl_s=86400.0)
    asyncio.run(create_topics(settings, 1))
    early = [event("ann", i, T0 + i * 60_000) for i in range(5)]
    later = [event("bob", i, T0 + 3 * DAY_MS + i * 60_000) for i in range(5)]
    with running(settings, tmp_path / "worker.log") as (_, url):
        from stream.demo import scrape

        asyncio.run(send(settings, [(e["actor"].encode(), orjson.dumps(e)) for e in early]))
        wait_until("ann checkpointed", lambda: scrape(url).get(
            "snoopwatch_state_checkpointed_actors_total", 0) >= 1, 60)
        asyncio.run(send(settings, [(e["actor"].encode(), orjson.dumps(e)) for e in later]))
        # ann's last event is three days of event time behind bob's: expired (the scan
        # runs at most every EXPIRE_EVERY_S).
        wait_until("ann expired", lambda: scrape(url).get("snoopwatch_tracked_actors") == 1
                   and scrape(url).get("snoopwatch_events_processed_total") == 10, 60)
        records = wait_until("ann's tombstone", lambda: (rs := asyncio.run(read_topic(
            settings, state_topic_name(settings)))) and any(
                r.key == b"ann" and r.value is None for r in rs) and rs, 30, 1)
    ann = [r for r in records if r.key == b"ann"]
    assert ann[0].value is not None and ann[-1].value is None
    (bob,) = [r for r in records if r.key == b"bob"][-1:]
    assert int(dict(bob.headers)[LAST_MS_HEADER]) == later[-1]["time"]
    assert pickle.loads(bob.value)["state"].signals["first_seen"].n == 5


def test_one_event_stamped_far_in_the_future_does_not_expire_everyone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.state

    monkeypatch.setattr(stream.state, "EXPIRE_EVERY_S", 0.0)
    engine = Engine(Settings(actor_ttl_s=2 * 86400))
    store = ActorStore(engine.settings, engine, Metrics())
    store.durable = False
    now_ms = int(time.time() * 1000)
    for i, (actor, t) in enumerate([("ann", now_ms), ("bob", 7_258_118_399_000)]):  # 2199
        ev = parse_event(event(actor, i, t))
        store.admit(actor, ev.event_id, 0, i)
        engine.process(ev)
    asyncio.run(store.checkpoint())
    assert set(engine.actors) == {"ann", "bob"}  # expiry's clock stopped at now + 1 day
