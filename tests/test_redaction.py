"""What dead letters and alerts keep of customer data (issue 17): SNOOPWATCH_DLQ_PAYLOAD and
SNOOPWATCH_ALERT_ATTRS on replay, the redaction key (the worker's side runs in
tests/test_security.py on a secured broker)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from detectors.redaction import Redactor, alert_redactor, redaction_key
from detectors.settings import Settings
from stream.pipeline import Pipeline
from stream.simulate import SimConfig, generate
from tests.procs import REPO

PII = "jane.doe@example.com"
GOOD = next(ev for ev, _ in generate(SimConfig(seed=1, agents=2, days=1)))
BAD_LINES = [
    orjson.dumps({**GOOD, "event_id": "e2", "source_ip": PII}),  # bad source_ip
    b'{"actor": "' + PII.encode() + b'", oops',  # not JSON
]


def _replay(tmp: Path, **env: str) -> tuple[list[dict], str]:
    """Replay a good event and the bad lines; (dead letters, stderr)."""
    events = tmp / "events.jsonl"
    events.write_bytes(b"\n".join([orjson.dumps(GOOD), *BAD_LINES]) + b"\n")
    out = subprocess.run([sys.executable, "-m", "stream.cli", "replay", str(events),
                          "--alerts", str(tmp / "alerts.jsonl"), "--dlq", str(tmp / "dlq.jsonl")],
                         cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "SNOOPWATCH_DATA_DIR": str(tmp / "state" / "worker"),
                              **env})
    assert out.returncode == 0, out.stderr
    dlq = (tmp / "dlq.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in dlq], out.stderr


def test_full_keeps_the_bytes(tmp_path: Path) -> None:
    records, _ = _replay(tmp_path)
    assert [r["field"] for r in records] == ["source_ip", None]
    assert all(PII in r["value"] for r in records)


def test_redacted_keeps_field_and_keyed_hash_not_the_bytes(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    records, stderr = _replay(tmp_path, SNOOPWATCH_DLQ_PAYLOAD="redacted",
                      SNOOPWATCH_REDACTION_KEY_FILE=str(key))
    assert [(r["reason"], r["field"]) for r in records] == [("bad_value", "source_ip"),
                                                           ("invalid_json", None)]
    raw = orjson.dumps(records)
    assert PII.encode() not in raw and b"value_b64" in raw  # the field is there, null
    assert all(r["value"] is None and r["value_b64"] is None and r["error"] is None
               for r in records)
    # The same key gives the same hash: a dead letter can be matched to its original.
    r = Redactor("redacted", b"0123456789abcdef0123456789abcdef")
    assert records[0]["value_hmac"] == r.hash(BAD_LINES[0])
    assert records[0]["source"] == {"file": str(tmp_path / "events.jsonl"), "line": 2}
    assert PII not in stderr
    # Another key, another hash: the hash is keyed, not a plain digest of the bytes.
    assert Redactor("redacted", b"another key of 16+ bytes").hash(BAD_LINES[0]) != \
        records[0]["value_hmac"]


def test_none_keeps_reason_field_origin_and_size_only(tmp_path: Path) -> None:
    records, stderr = _replay(tmp_path, SNOOPWATCH_DLQ_PAYLOAD="none")
    assert records[0] == {"reason": "bad_value", "field": "source_ip",
                          "source": {"file": str(tmp_path / "events.jsonl"), "line": 2},
                          "size": len(BAD_LINES[0]), "payload": "none"}
    assert PII.encode() not in orjson.dumps(records) and PII not in stderr


def test_the_per_install_key_is_made_once_and_private(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path / "state" / "worker"))
    first = redaction_key(s)
    assert redaction_key(s) == first and len(first) == 32
    path = tmp_path / "state" / "redaction.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_bad_mode_or_key_file_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^SNOOPWATCH_DLQ_PAYLOAD='hashed': must be full, "
                                         r"redacted or none$"):
        Settings.from_env({"SNOOPWATCH_DLQ_PAYLOAD": "hashed"})
    with pytest.raises(ValueError, match=r"^SNOOPWATCH_REDACTION_KEY_FILE=.*: cannot read"):
        Pipeline(Settings(dlq_payload="redacted", redaction_key_file=str(tmp_path / "no")))


def test_alert_attrs_are_kept_redacted_or_dropped() -> None:
    # SPEC §2's alert has no attrs field today; an alert that carries them goes through this.
    alert = {"alert_id": "a1", "actor": "alice", "attrs": {"route": "/customers/c1", "n": 3}}
    assert alert_redactor(Settings()) is None  # full: untouched
    red = Redactor("redacted", b"k" * 32).alert(alert)
    assert set(red["attrs"]) == {"route", "n"} and "/customers" not in orjson.dumps(red).decode()
    assert "attrs" not in Redactor("none", b"").alert(alert)
    assert alert["attrs"]["route"] == "/customers/c1"  # the original is not changed
