"""``snoopwatch replay`` (SPEC §4): same detectors, no Kafka, deterministic, nothing lost."""

from __future__ import annotations

import json
import random
from pathlib import Path

import orjson
import pytest

from stream.cli import main
from stream.simulate import SimConfig, write_jsonl

SIM = SimConfig(seed=5, agents=12, days=4, insiders=1)


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sim")
    paths = {"events": d / "events.jsonl", "labels": d / "labels.jsonl",
             "context": d / "context.jsonl"}
    write_jsonl(SIM, str(paths["events"]), str(paths["labels"]), str(paths["context"]))
    return paths


def run_replay(events: Path, out: Path, context: Path | None = None) -> dict[str, bytes]:
    args = [str(events), "--alerts", str(out / "alerts.jsonl"), "--scores",
            str(out / "scores.jsonl"), "--dlq", str(out / "dlq.jsonl")]
    if context:
        args += ["--context", str(context)]
    assert main(["replay", *args]) == 0
    return {name: (out / f"{name}.jsonl").read_bytes() for name in ("alerts", "scores", "dlq")}


def test_two_runs_give_identical_output(sim_files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = run_replay(sim_files["events"], tmp_path / "a", sim_files["context"])
    second = run_replay(sim_files["events"], tmp_path / "b", sim_files["context"])
    assert first == second
    assert first["alerts"], "the simulated insider raised no alert"


def test_scores_one_line_per_valid_event_in_input_order(sim_files: dict[str, Path],
                                                        tmp_path: Path) -> None:
    out = run_replay(sim_files["events"], tmp_path)
    ids = [orjson.loads(line)["event_id"] for line in sim_files["events"].read_bytes().splitlines()]
    scores = [orjson.loads(line) for line in out["scores"].splitlines()]
    assert [s["event_id"] for s in scores] == ids
    assert all(0 <= s["score"] <= 100 for s in scores)
    labels = {orjson.loads(line)["event_id"] for line in sim_files["labels"].read_bytes()
              .splitlines()}
    bad = [s["score"] for s in scores if s["event_id"] in labels]
    good = [s["score"] for s in scores if s["event_id"] not in labels]
    assert sum(bad) / len(bad) > 3 * sum(good) / len(good)


def test_alerts_follow_spec_and_name_the_insider(sim_files: dict[str, Path],
                                                 tmp_path: Path) -> None:
    out = run_replay(sim_files["events"], tmp_path)
    alerts = [orjson.loads(line) for line in out["alerts"].splitlines()]
    labelled = {orjson.loads(line)["event_id"] for line in sim_files["labels"].read_bytes()
                .splitlines()}
    for a in alerts:
        assert a["emitted_at"] == a["time"]  # replay's clock is the event time
        assert 1 <= len(a["event_ids"]) <= 50 and a["severity"] in (
            "low", "medium", "high", "critical")
    assert any(a["event_ids"][0] in labelled for a in alerts)


def test_bad_lines_are_dead_lettered_with_file_and_line(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    events = tmp_path / "events.jsonl"
    good = orjson.dumps({"event_id": "ok", "time": "2026-11-02T10:00:00Z", "actor": "a",
                         "action": "read", "resource_type": "order"})
    events.write_bytes(b"\n".join([good, b"{nope", b"", b'{"event_id": "x"}', b"\xff", good])
                       + b"\n")
    out = run_replay(events, tmp_path)
    records = [orjson.loads(line) for line in out["dlq"].splitlines()]
    assert [(r["source"]["line"], r["reason"]) for r in records] == [
        (2, "invalid_json"), (3, "invalid_json"), (4, "missing_field"), (5, "invalid_utf8")]
    assert all(r["source"]["file"] == str(events) for r in records)
    assert len(out["scores"].splitlines()) == 2  # both good lines processed
    err = capsys.readouterr().err
    assert f"{events}:4: missing_field (time)" in err
    assert "4 dead-lettered" in err


def test_dead_letters_and_context_rejects_are_the_same_every_run(
        sim_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    events, context = tmp_path / "events.jsonl", tmp_path / "context.jsonl"
    events.write_bytes(sim_files["events"].read_bytes() + b"{nope\n\xff\n")
    context.write_bytes(sim_files["context"].read_bytes()
                        + b'{"kind": "vip_customer"}\n{"kind": "weather"}\n')
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        runs.append(run_replay(events, tmp_path / name, context))
    assert runs[0] == runs[1]  # byte for byte, dead letters included
    records = [orjson.loads(line) for line in runs[0]["dlq"].splitlines()]
    assert [r["reason"] for r in records] == ["missing_field", "invalid_json", "invalid_utf8"]
    applied = len(sim_files["context"].read_bytes().splitlines())
    assert f"context: {applied} entries applied, 1 dead-lettered" in capsys.readouterr().err


def test_a_null_context_line_is_malformed_as_on_the_context_topic(
        sim_files: dict[str, Path], tmp_path: Path) -> None:
    context = tmp_path / "context.jsonl"
    context.write_bytes(b'null\n{"kind": "vip_customer", "id": "c1"}\n')
    out = run_replay(sim_files["events"], tmp_path, context)
    (record,) = [orjson.loads(line) for line in out["dlq"].splitlines()]
    assert record["reason"] == "not_an_object" and "got null" in record["error"]


def test_a_repeated_event_id_is_skipped_as_the_worker_does(
        sim_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def every_tenth_twice(lines: list[bytes]) -> list[bytes]:
        return [x for i, line in enumerate(lines) for x in [line] * (2 if i % 10 == 0 else 1)]

    lines = sim_files["events"].read_bytes().splitlines()
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_bytes(b"\n".join(every_tenth_twice(lines)) + b"\n")
    (tmp_path / "once").mkdir()
    (tmp_path / "twice").mkdir()
    once = run_replay(sim_files["events"], tmp_path / "once")
    capsys.readouterr()
    twice = run_replay(doubled, tmp_path / "twice")
    assert twice["alerts"] == once["alerts"]
    # One score line per valid line still; a repeat's is the risk its first copy left.
    assert twice["scores"].splitlines() == every_tenth_twice(once["scores"].splitlines())
    repeats = (len(lines) + 9) // 10
    assert f"({repeats} valid ones repeated an event_id: skipped)" in capsys.readouterr().err


def test_events_out_of_time_order_are_not_a_burst(sim_files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    """Input not keyed by actor reaches detection in the order its partitions drain: here 4
    partitions read 300 events at a time, hours apart in event time. Late events must not
    pile into the running hour (before they were counted there: 13 alerts on normal staff)."""
    rng = random.Random(1)
    parts: list[list[bytes]] = [[], [], [], []]
    for line in sim_files["events"].read_bytes().splitlines():
        parts[rng.randrange(4)].append(line)
    shuffled = [line for start in range(0, max(map(len, parts)), 300) for part in parts
                for line in part[start:start + 300]]
    events = tmp_path / "unkeyed.jsonl"
    events.write_bytes(b"\n".join(shuffled) + b"\n")
    alerts = [orjson.loads(line) for line in run_replay(events, tmp_path)["alerts"].splitlines()]
    labelled = {orjson.loads(line)["event_id"]
                for line in sim_files["labels"].read_bytes().splitlines()}
    insiders = {ev["actor"] for ev in map(orjson.loads, shuffled) if ev["event_id"] in labelled}
    assert insiders and insiders <= {a["actor"] for a in alerts}
    assert len({a["actor"] for a in alerts} - insiders) <= 1


def test_missing_input_file_is_a_clear_error_and_empties_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    alerts = tmp_path / "a.jsonl"
    alerts.write_bytes(b"earlier alerts\n")
    rc = main(["replay", str(tmp_path / "nope.jsonl"), "--alerts", str(alerts)])
    assert rc == 1
    assert "nope.jsonl" in capsys.readouterr().err
    assert alerts.read_bytes() == b"earlier alerts\n"


@pytest.mark.parametrize("clash", [
    ["--alerts", "{events}"],
    ["--alerts", "{out}", "--scores", "{out}"],
    ["--alerts", "{out}", "--dlq", "{context}"],
    ["--alerts", "{link}"],  # another name for the input
])
def test_an_output_that_is_an_input_or_another_output_is_refused(
        sim_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
        clash: list[str]) -> None:
    events, context = tmp_path / "events.jsonl", tmp_path / "context.jsonl"
    events.write_bytes(sim_files["events"].read_bytes())
    context.write_bytes(sim_files["context"].read_bytes())
    (tmp_path / "link.jsonl").symlink_to(events)
    names = {"events": events, "context": context, "out": tmp_path / "out.jsonl",
             "link": tmp_path / "link.jsonl"}
    args = [a.format(**names) for a in clash]
    if "--alerts" not in args:
        args += ["--alerts", str(tmp_path / "alerts.jsonl")]
    rc = main(["replay", str(events), "--context", str(context), *args])
    assert rc == 1
    assert "same file" in capsys.readouterr().err
    assert events.read_bytes() == sim_files["events"].read_bytes()
    assert context.read_bytes() == sim_files["context"].read_bytes()


def test_evaluate_reports_the_insider(sim_files: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(sim_files["events"]), "--labels",
                 str(sim_files["labels"]), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    header, *rows = table.splitlines()
    assert header.split() == ["snoopwatch", "HalfSpaceTrees"]
    row = next(r for r in rows if r.startswith("bulk_no_ticket: detected"))
    assert row.split()[4].rstrip(",") == "1/1"  # snoopwatch column: the insider was found
    # The JSON lists each instance's time to detect beside the median.
    found = json.loads(out.read_text())["snoopwatch"]["scenarios"]["bulk_no_ticket"]
    assert len(found["minutes_to_detect"]) == 1
    assert found["minutes_to_detect"][0] == found["median_minutes_to_detect"] >= 0


def test_vip_and_departing_context_is_applied_not_only_read(tmp_path: Path) -> None:
    """Every VIP snoop is caught within the hour and the departing grab at all, with the
    company's context; without it none of them is (issue 14: a replay that counted the
    context entries but never used them passed every other test)."""
    from stream.simulate import generate
    from tests.context_case import SIM as CTX_SIM
    from tests.context_case import caught, instances

    events, labels, context = (tmp_path / n for n in ("e.jsonl", "l.jsonl", "c.jsonl"))
    write_jsonl(CTX_SIM, str(events), str(labels), str(context))
    spans = instances(list(generate(CTX_SIM)))
    assert {label for _, label in spans} == {"vip_snooping", "departing_employee"}
    found = {}
    for name, ctx in (("with", context), ("without", None)):
        (tmp_path / name).mkdir()
        out = run_replay(events, tmp_path / name, ctx)
        found[name] = caught(spans, [orjson.loads(line) for line in out["alerts"].splitlines()])
    assert all(found["with"].values()), found["with"]
    assert not any(found["without"].values()), found["without"]
