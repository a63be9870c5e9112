"""The benchmark harness (``make bench``, benchmarks/bench.py) works, at a tiny scale.

No timing is asserted (the machine is shared and noisy): only that every phase measures
something, that tipping bursts really come back as alerts, and that the run leaves no
process, topic or file behind.
"""

from __future__ import annotations

import asyncio
import doctest
import json
from pathlib import Path

import orjson
import pytest

from benchmarks import bench, probes
from detectors.events import decode_event
from detectors.settings import bootstrap_servers
from tests.procs import BROKER, require_broker


def test_doctests() -> None:
    for module in (bench, probes):
        result = doctest.testmod(module)
        # (attempted: a module whose examples were lost would pass with nothing failed)
        assert result.failed == 0 and result.attempted > 0


def test_synthetic_events_are_valid_and_varied() -> None:
    synth = probes.Synth(300, seed=5)
    events = [synth.event(i % 300, 1_795_000_000_000 + i, f"e{i}") for i in range(3000)]
    parsed = [decode_event(orjson.dumps(ev)) for ev in events]
    assert len({ev.actor for ev in parsed}) == 300
    assert {ev.role for ev in parsed} >= {"support_agent", "analyst", "engineer"}
    assert any(ev.is_egress for ev in parsed) and any(ev.ticket for ev in parsed)


@pytest.mark.parametrize("generator", ["sim", "synthetic"])
def test_corpus_and_latency_schedule(tmp_path: Path, generator: str) -> None:
    corpus = bench.build_corpus(tmp_path / "ev.jsonl", 3000, 40, generator, seed=3)
    assert len(corpus.values) == len(corpus.keys) == 3000
    assert corpus.path.read_bytes() == b"\n".join(corpus.values) + b"\n"  # replay: same bytes
    assert [orjson.loads(v)["actor"].encode() for v in corpus.values] == corpus.keys
    assert corpus.candidates[0][1] == "support_agent"

    b = bench.Bench(bench.parse_args(["--workdir", str(tmp_path)]))
    keys, values, tips = b.latency_schedule(corpus, 5000, 4, 50)  # more than the corpus
    assert len(keys) == len(values) == 5000 and len(tips) == 4 * 50
    events = [decode_event(v) for v in values]
    assert len({e.event_id for e in events}) == 5000
    assert min(e.time_ms for e in events) > corpus.last_ms
    last: dict[str, int] = {}
    for e in events:  # each actor's events stay in time order
        assert e.time_ms >= last.get(e.actor, 0)
        last[e.actor] = e.time_ms
    tipped = [events[i] for i in sorted(tips)]
    assert all(e.ticket is None and e.client.startswith("python-requests/") for e in tipped)
    assert {e.actor for e in tipped} == {c[0] for c in corpus.candidates[:4]}


def test_memory_probe_stops_before_the_limit() -> None:
    got = []
    recs = probes.memory_probe([1000, 20_000], 1, limit_bytes=probes.rss_bytes() + (8 << 20),
                               emit=got.append)
    assert recs == got
    # (RSS may not grow for the first 1000 actors: the test process reuses freed memory)
    assert recs[0]["actors"] == 1000 and recs[0]["bytes_per_actor"] >= 0
    assert recs[-1].get("stopped") and recs[-1]["actors"] < 20_000


@pytest.mark.kafka
def test_quick_run_measures_every_phase_and_cleans_up(tmp_path: Path) -> None:
    require_broker()
    out = tmp_path / "bench.json"
    rc = bench.main(["--broker", BROKER, "--events", "2000", "--actors", "100", "--quick",
                     "--latency-seconds", "3", "--latency-rate", "400", "--latency-bursts",
                     "4", "--burst-size", "60", "--memory-actors", "1000",
                     "--memory-per-actor", "2", "--json", str(out),
                     "--workdir", str(tmp_path)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = {r["metric"]: r for r in result["rows"]}
    assert result["failed"] == []
    for metric in ("(a) bare aiokafka consumer + orjson.loads",
                   "(b) faust agent doing nothing (raw values)",
                   "(c) snoopwatch worker, every detector on",
                   "(c0) the worker, detection core replaced by a constant",
                   "snoopwatch replay", "read + orjson.loads loop, same file"):
        assert rows[metric]["value"] > 0, metric
    for metric in ("(c)/(a) worker vs bare consumer", "(c)/(b) worker vs faust no-op",
                   "replay / read loop"):
        assert rows[metric]["unit"] == "%"
    # The tipping bursts really come back as alerts, matched by their triggering event.
    assert rows["latency: alerts on tipping events"]["value"] >= 1
    assert result["details"]["latency"]["timestamp"] == "LogAppendTime"
    assert rows["event-to-alert latency p99"]["value"] > 0
    assert rows["memory per tracked actor @ 1,000 actors"]["value"] > 0
    assert result["details"]["worker"]["valid"] == 2000
    # The hollow worker drained everything too, without detecting (no actor state).
    hollow = result["details"]["hollow"]
    assert hollow["valid"] == 2000 and hollow["alerts"] == 0
    assert hollow["tracked_actors"] == 0 < result["details"]["worker"]["tracked_actors"]

    # Nothing left behind: no run folder, no topic of the run.
    assert not list(tmp_path.glob("run-*"))

    async def leftovers() -> list[str]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(BROKER))
        await admin.start()
        try:
            return [t for t in await admin.list_topics() if t.startswith(run_prefix)]
        finally:
            await admin.close()

    run_prefix = f"bench-{result['run_id']}-"
    assert asyncio.run(leftovers()) == []
