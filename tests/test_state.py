"""The worker's per-actor admission: replays, duplicates and events forwarded twice."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from detectors.engine import Engine
from detectors.settings import Settings
from detectors.signals.base import Profile
from stream.metrics import Metrics
from stream.state import (
    ENGINE_KEY,
    ActorMeta,
    ActorStore,
    decode_engine,
    decode_record,
    encode_record,
    engine_snapshot,
    id_digest,
    pack_engine,
)


def test_an_event_forwarded_again_after_an_ingest_restart_counts_once() -> None:
    metrics = Metrics()
    store = ActorStore(Settings(dedup_window=2), Engine(), metrics)
    # By-actor offsets 0..2 carry input offsets 10..12 of input partition 3.
    assert [store.admit("ann", f"e{i}", 0, i, (3, 10 + i)) for i in range(3)] == ["process"] * 3
    # Ingest restarted before committing: input offsets 10..12 arrive again, with new
    # by-actor offsets and ids already out of the (tiny) id window.
    again = [store.admit("ann", f"e{i}", 0, 3 + i, (3, 10 + i)) for i in range(3)]
    assert again == ["duplicate"] * 3
    assert store.admit("ann", "e3", 0, 6, (3, 13)) == "process"  # the next new event
    assert store.admit("ann", "e3", 0, 6, (3, 13)) == "replayed"  # same by-actor offset
    assert metrics.duplicates._value.get() == 3


def test_the_forwarding_watermark_survives_a_checkpoint() -> None:
    store = ActorStore(Settings(), Engine(), Metrics())
    store.admit("ann", "e1", 0, 0, (1, 41))
    meta = store.meta["ann"]
    restored, _ = decode_record(encode_record(meta, object()), 0)
    assert restored.sources == {1: 41} and restored.offset == 0


def test_the_id_window_remembers_the_last_n_ids_and_survives_a_checkpoint() -> None:
    store = ActorStore(Settings(dedup_window=3), Engine(), Metrics())
    ids = [f"e{i}" for i in range(5)]
    assert [store.admit("ann", i, 0, None) for i in ids] == ["process"] * 5
    meta = store.meta["ann"]
    assert len(meta.ids) == 3 * 8  # three 8-byte digests: a window, not a history
    restored, _ = decode_record(encode_record(meta, object()), 0)
    for m in (meta, restored):  # the last three are duplicates; e0, e1 fell out of it
        store.meta["ann"] = m
        assert [store.admit("ann", i, 0, None) for i in ids[2:]] == ["duplicate"] * 3
    store.meta["ann"] = restored
    assert store.admit("ann", "e1", 0, None) == "process"  # it takes the oldest slot (e2)
    assert store.admit("ann", "e2", 0, None) == "process"
    assert store.admit("ann", "e4", 0, None) == "duplicate"


def test_a_digest_straddling_two_slots_is_not_a_match() -> None:
    meta = ActorMeta(0)
    a, b = id_digest("a"), id_digest("b")
    assert not meta.seen(a, 4) and not meta.seen(b, 4)
    straddle = (a + b)[4:12]
    assert not meta.seen(straddle, 4)
    assert meta.seen(a, 4) and meta.seen(b, 4) and meta.seen(straddle, 4)


def test_a_checkpoint_written_with_id_strings_still_restores() -> None:
    old = pickle.dumps({"v": 1, "offset": 7, "ids": ["e1", "e2"], "sources": {0: 3},
                        "state": None})
    meta, _ = decode_record(old, 0)
    store = ActorStore(Settings(), Engine(), Metrics())
    store.meta["ann"] = meta
    assert store.admit("ann", "e2", 0, 8) == "duplicate"
    assert store.admit("ann", "e3", 0, 9) == "process"


def _read(i: int, actor: str, hour: int = 0) -> Any:
    from detectors.events import parse_event

    return parse_event({"event_id": f"{actor}-{i}", "time": 1_700_000_000_000 + hour * 3_600_000
                        + i, "actor": actor, "role": "support_agent", "action": "read",
                        "resource_type": "customer_profile", "customer_id": f"c{i % 7}",
                        "ticket": "T1"})


def captured_sends(store: ActorStore) -> list[tuple[int, bytes, bytes | None, int]]:
    """The records ``store``'s epochs send from now on, kept instead of sent (no broker)."""
    sent: list[tuple[int, bytes, bytes | None, int]] = []

    async def capture(records: list[tuple[int, bytes, bytes | None, int]], *_: Any) -> None:
        sent.extend(records)

    store._send = capture  # type: ignore[method-assign]
    return sent


def test_a_checkpoint_with_plain_dict_signals_restores_them_as_profiles() -> None:
    """Records written before :class:`Profile` hold plain dicts in ``signals`` (actor and
    peer group): restored, they are Profiles with the same states in the same order, and
    the actor carries on as if it had never been checkpointed."""
    from detectors.events import parse_event

    eng = Engine()
    for i in range(80):
        eng.process(_read(i, "ann", hour=i // 10))
    # The records as the engine wrote them before Profile: plain dicts in signals.
    st, shared = pickle.loads(pickle.dumps((eng.actors["ann"], eng.shared_state())))
    st.signals = dict(st.signals)
    peer = shared["peers"]["support_agent"]
    peer.signals = dict(peer.signals)
    record, shared_blob = encode_record(ActorMeta(0), st), pickle.dumps(shared)
    restored = Engine()
    restored.load_shared(pickle.loads(shared_blob))
    restored.actors["ann"] = decode_record(record, 0)[1]
    for plain, profile in ((st.signals, restored.actors["ann"].signals),
                           (peer.signals, restored.peers["support_agent"].signals)):
        assert type(plain) is dict and type(profile) is Profile
        # (compared after a pickle round trip, which alone changes the bytes, not the state)
        assert pickle.dumps(dict(profile)) == pickle.dumps(pickle.loads(pickle.dumps(plain)))
    # Exports at night from a new client and address: every signal's state takes part.
    later = [parse_event({"event_id": f"x{i}", "time": 1_700_000_000_000 + 30 * 3_600_000 + i,
                          "actor": "ann", "role": "support_agent", "action": "export",
                          "resource_type": "customer_profile", "records": 50_000,
                          "client": "curl", "source_ip": "203.0.113.9"}) for i in range(5)]
    scores = [restored.process(e).score for e in later]
    assert scores == [eng.process(e).score for e in later] and scores[-1] > 50


def test_an_address_two_actors_used_restores_as_a_shared_host() -> None:
    """A group checkpointed when a shared host took three actors restores an address two of
    them used as shared (what it is now), so the two actors' calls from it are not their own
    origin, as on a worker that ran the new rule from the start."""
    from detectors.signals.new_origin import PeerOrigins

    group = PeerOrigins({"10.60.0.0/24": 2}, since=0)
    group.hosts = {"10.60.0.5": ("ann", "al"), "10.1.2.3": ("bob",)}
    restored = pickle.loads(pickle.dumps(group))
    assert restored.shared == {"10.60.0.5"} and restored.hosts == {"10.1.2.3": ("bob",)}
    assert restored.on_shared_host("10.60.0.5", "ann")


def test_a_peer_group_from_before_shared_hosts_restores_and_takes_new_origins_ops() -> None:
    """A group checkpointed before shared hosts held its networks as a plain dict: restored,
    it is a :class:`PeerOrigins` with those networks, and the schedule's ops apply to it."""
    from detectors.signals.new_origin import PeerOrigins

    eng = Engine()
    for i in range(20):
        eng.process(_read(i, "ann", hour=i // 10))
    shared = eng.shared_state()
    shared["peers"]["support_agent"].signals["new_origin"] = {"10.1.2.0/24": 3}
    restored = Engine()
    restored.load_shared(pickle.loads(pickle.dumps(shared)))
    group = restored.peers["support_agent"].signals["new_origin"]
    assert isinstance(group, PeerOrigins) and group.networks == {"10.1.2.0/24": 3}
    from detectors.events import parse_event

    for i in range(3):  # a new actor's calls from another network, over two hours
        restored.process(parse_event({
            "event_id": f"bob-{i}", "time": 1_700_000_000_000 + (3 + i) * 3_600_000,
            "actor": "bob", "role": "support_agent", "action": "read",
            "resource_type": "customer_profile", "customer_id": "c1", "ticket": "T1",
            "client": "crm", "source_ip": "10.9.9.9"}))
    assert group.networks["10.1.2.0/24"] == 3 and group.networks["10.9.9.0/24"] == 1
    assert group.clients == {"crm": 1}


def test_a_groups_egress_baseline_from_before_its_sizes_restores_and_learns_them() -> None:
    """A group checkpointed before egress hours' sizes were kept held a plain
    :class:`VolumeBaseline`: restored, it is a :class:`PeerEgress` with the same baseline,
    whose sizes learn from the hours the schedule applies from then on."""
    from detectors.models import VolumeBaseline
    from detectors.signals.volume import EGRESS_FEATURES, EGRESS_MIN, PeerEgress

    eng = Engine()
    for i in range(20):
        eng.process(_read(i, "ann", hour=i // 10))
    old = VolumeBaseline(EGRESS_FEATURES, EGRESS_MIN, name="egress")
    for records in (2_000, 3_000, 300_000):
        old.learn_one({"egress": records, "egress_bytes": 100 * records})
    shared = eng.shared_state()
    shared["peers"]["support_agent"].signals["egress"] = old
    restored = Engine()
    restored.load_shared(pickle.loads(pickle.dumps(shared)))
    group = restored.peers["support_agent"].signals["egress"]
    assert isinstance(group, PeerEgress) and group.hours == 3
    assert group.stats["egress"].mean == old.stats["egress"].mean
    assert group.sizes["egress"].n == 0
    group.learn_one({"egress": 5_000, "egress_bytes": 500_000})
    assert group.hours == 4 and group.sizes["egress"].reaching(4_000) == 1


def test_a_groups_ticket_habit_from_before_restores_with_the_long_memory() -> None:
    """A group checkpointed when its ticket habit followed its last ~50 reads restores with
    the same share, and follows the group's long memory from then on: fifty unticketed
    reads (a night shift's call-backs) then barely move it."""
    from detectors.models import TicketHabit
    from detectors.priors import PEER_TICKET_ALPHA, TICKET_ALPHA

    eng = Engine()
    for i in range(20):
        eng.process(_read(i, "ann", hour=i // 10))
    old = TicketHabit(TICKET_ALPHA, min_events=90)
    for i in range(2_000):
        old.learn_one({"customer": True, "ticketed": i % 10 != 0})
    shared = eng.shared_state()
    shared["peers"]["support_agent"].signals["unjustified"] = old
    restored = Engine()
    restored.load_shared(pickle.loads(pickle.dumps(shared)))
    group = restored.peers["support_agent"].signals["unjustified"]
    assert group.rate.alpha == PEER_TICKET_ALPHA
    assert group.ticketed_share == old.ticketed_share
    for _ in range(50):
        group.learn_one({"customer": True, "ticketed": False})
    assert group.ticketed_share > 0.8


def test_a_novelty_profile_from_before_adopters_restores_without_them() -> None:
    """A :class:`FirstSeen` profile pickled before it counted adopters (and held a client
    to judge at the hour's end) restores with none; one with them keeps them."""
    from detectors.models import FirstSeen

    fs = FirstSeen(min_events=5)
    for _ in range(20):
        fs.learn_one({"client": "crm", "network": "10.1.2.0/24"})
    state = fs.__getstate__()
    record = (state[0], {k: v for k, v in state[1].items() if k not in ("adopters", "pending")})
    restored = FirstSeen.__new__(FirstSeen)
    restored.__setstate__(record)
    assert restored.adopters == {} and restored.pending is None
    assert restored.score_one({"client": "curl"}) == fs.score_one({"client": "curl"})
    fs.adopt("client", "crm")
    fs.adopt("client", "never-learned")
    again = pickle.loads(pickle.dumps(fs))
    assert again.adopted("client", "crm") == 1 and again.adopted("client", "never-learned") == 0


def test_a_daily_count_written_before_its_window_restores_without_one() -> None:
    """A :class:`DailyCount` pickled before the robust window existed (departing's usual
    downloads in a checkpoint of an older version) restores, judged as it was (no window);
    one with a window keeps it."""
    from detectors.models import DailyCount

    old = DailyCount()
    for n in (4, 2, 20, 5, 1):
        old.add(n)
        old.roll()
    old.add(14)
    state = old.__getstate__()
    record = (state[0], {k: v for k, v in state[1].items() if k not in ("window", "days")})
    restored = DailyCount.__new__(DailyCount)
    restored.__setstate__(record)
    assert (restored.window, restored.days) == (0, ()) and restored.robust_z() == old.z()
    windowed = DailyCount(window=3)
    for n in (4, 2, 20, 5):
        windowed.add(n)
        windowed.roll()
    again = pickle.loads(pickle.dumps(windowed))
    assert (again.window, again.days) == (3, (2.0, 20.0, 5.0))


async def test_an_epoch_is_one_point_of_the_stream_while_the_agents_run_on() -> None:
    """The actors of an epoch are pickled in slices with events applied in between (the agents
    are not held for the whole checkpoint): each record, and the engine-wide state, must still
    be the state at the cut, as an actor about to take an event is pickled first."""
    store = ActorStore(Settings(), Engine(), Metrics())
    actors = [f"a{n:03d}" for n in range(350)]  # several slices (CHECKPOINT_SLICE)

    def apply(actor: str, i: int) -> None:
        if store.admit(actor, f"{actor}-{i}", 0, None) == "process":
            store.engine.process(_read(i, actor))

    for i, actor in enumerate(actors):
        apply(actor, i)
    # (compared after a pickle round trip, which alone changes the bytes, not the state)
    at_cut = {a: pickle.dumps(pickle.loads(pickle.dumps(store.engine.actors[a])))
              for a in actors}
    shared_at_cut = pickle.dumps(pickle.loads(pickle.dumps(store.engine.shared_state())))
    sent = captured_sends(store)
    task = asyncio.ensure_future(store.checkpoint())
    moved = 0
    while not task.done():  # events of actors not yet pickled, in between the slices
        await asyncio.sleep(0)
        for actor in reversed(actors):
            if actor in store.cutting:
                apply(actor, 10_000 + moved)
                moved += 1
                break
    await task
    assert moved > 50, "no event was applied while the epoch was being pickled"
    records = {k.decode(): v for _, k, v, _ in sent if k != ENGINE_KEY}
    assert set(records) == set(actors)
    for actor, blob in records.items():
        assert pickle.dumps(decode_record(blob, 0)[1]) == at_cut[actor], actor
    (engine_blob,) = {v for _, k, v, _ in sent if k == ENGINE_KEY}
    assert pickle.dumps(decode_engine(engine_blob)[1]) == shared_at_cut
    assert pickle.dumps(pickle.loads(pickle.dumps(store.engine.shared_state()))
                        ) != shared_at_cut  # the engine did move on meanwhile


async def test_an_epoch_a_partition_waits_for_at_the_barrier_leaves_the_agents_no_turn() -> None:
    """The slices above let the agents run on, but not in an epoch a partition waits for at
    the peer-ops barrier (its record is in it): the events held for it would wait for the
    slices and the agents' turns too (with 8k changed actors, 13 s instead of 1.6 s)."""
    from stream.peerops import Barrier

    store = ActorStore(Settings(), Engine(), Metrics())
    actors = [f"a{n:03d}" for n in range(350)]  # several slices (CHECKPOINT_SLICE)
    for i, actor in enumerate(actors):
        if store.admit(actor, f"{actor}-{i}", 0, None) == "process":
            store.engine.process(_read(i, actor))
    store.barrier = Barrier(store.engine, 1)
    store.barrier.enter(0, 5)  # partition 0 entered hour 5: its record waits for this epoch
    sent = captured_sends(store)
    task = asyncio.ensure_future(store.checkpoint())
    turns = 0
    while not task.done():
        await asyncio.sleep(0)
        turns += bool(store.cutting)
    await task
    assert turns == 0, "the agents ran while the epoch a partition waits for was pickled"
    assert {k.decode() for _, k, _, _ in sent if k != ENGINE_KEY} == set(actors)


async def test_the_send_of_an_epoch_waited_for_gives_the_agents_no_turn_either() -> None:
    """The same for the epoch's transaction: sent in slices with the agents running, but
    in one go while a partition waits at the barrier for it (``hurry``)."""
    from types import SimpleNamespace

    class Producer:  # (a broker that acks every record at once)
        sent = 0

        async def begin_transaction(self) -> None:
            pass

        async def commit_transaction(self) -> None:
            pass

        async def send(self, topic: str, value: bytes, key: bytes, partition: int,
                       headers: Any) -> asyncio.Future:
            self.sent += 1
            done = asyncio.get_running_loop().create_future()
            done.set_result(SimpleNamespace(partition=partition, offset=self.sent))
            return done

    records = [(0, f"a{n:03d}".encode(), b"state", 1) for n in range(350)]
    for hurry, mid_send in ((False, True), (True, False)):
        store = ActorStore(Settings(), Engine(), Metrics())
        producer = Producer()

        async def made(producer: Producer = producer) -> Producer:
            return producer

        store.producer = made  # type: ignore[method-assign]
        task = asyncio.ensure_future(store._send(records, [], lambda hurry=hurry: hurry))
        turns = 0
        while not task.done():
            await asyncio.sleep(0)
            turns += 0 < producer.sent < len(records)
        await task
        assert producer.sent == len(records) and bool(turns) == mid_send, (hurry, turns)


def test_an_engine_record_is_written_compressed_and_an_older_one_still_reads() -> None:
    """Engine records are zlib-compressed since 2026-12-08 (the barrier's pending ops of an
    hour made them 17 MB at 40k events in the hour, over the topic's 16 MB); one written
    before, a bare pickle, reads the same."""
    eng = Engine()
    for i in range(400):
        eng.process(_read(i, f"a{i % 40}"))
    bare = engine_snapshot(eng, 3, {0: 17})
    packed = pack_engine(bare)
    assert len(packed) < len(bare) / 2
    assert pickle.dumps(decode_engine(packed)) == pickle.dumps(decode_engine(bare))
    assert decode_engine(packed)[0] == 3


async def test_an_engine_record_over_the_topic_limit_fails_the_epoch_and_loses_nothing(
        monkeypatch: Any, caplog: Any) -> None:
    """An engine record too large for one message is not sent (the broker would refuse it
    after the actors' records): the epoch fails with the reason and the remedy in the log,
    and its actors stay dirty and its events unacked for the next one."""
    import stream.state

    store = ActorStore(Settings(), Engine(), Metrics())
    for i in range(50):
        if store.admit("ann", f"ann-{i}", 0, None) == "process":
            store.engine.process(_read(i, "ann"))
    store.unacked.append("event")
    acked: list[Any] = []
    store.ack = acked.append  # type: ignore[method-assign]
    sent = captured_sends(store)
    monkeypatch.setattr(stream.state, "STATE_MAX_MESSAGE_BYTES",
                        stream.state.ENGINE_RECORD_SLACK + 100)
    with pytest.raises(stream.state.StateTooLarge, match="run more workers"):
        await store.checkpoint()
    assert not sent and "ann" in store.dirty and store.unacked == ["event"]
    assert "checkpoint not written: the engine record is" in caplog.text
    monkeypatch.undo()
    await store.checkpoint()
    assert {k for _, k, _, _ in sent} == {b"ann", ENGINE_KEY} and acked == ["event"]


def test_a_peer_group_with_a_running_quantile_restores_with_a_fresh_histogram() -> None:
    """Groups checkpointed before 2026-12-07 kept their adaptive bar as river's running
    P-square quantile: restored, the group starts a histogram of its hours (and its bar
    applies again after SNOOPWATCH_ADAPTIVE_MIN_HOURS of them); the rest of it is kept."""
    from river import stats

    from detectors.models import Peaks

    eng = Engine()
    for i in range(20):
        eng.process(_read(i, "ann", hour=i // 10))
    shared = eng.shared_state()
    old = shared["peers"]["support_agent"]
    old.risk, old.risk_hours = stats.Quantile(0.9), 900
    for x in (5.0, 30.0, 90.0):
        old.risk.update(x)
    restored = Engine()
    restored.load_shared(pickle.loads(pickle.dumps(shared)))
    group = restored.peers["support_agent"]
    assert isinstance(group.risk, Peaks) and group.risk.n == 0 and group.risk_hours == 0
    assert restored.threshold(group) == restored.settings.alert_threshold
    assert list(group.signals) == list(old.signals)
