"""Hostile and broken input on the ingest path (issue 4, part 4), property-based.

Whatever bytes arrive, :meth:`stream.pipeline.Pipeline.ingest` returns a valid event or a
rejection whose reason is one of :data:`detectors.events.REASONS`, counts it, and never
raises; valid events then go through detection without an exception. The real-broker side
(duplicates, oversized messages) is in ``tests/test_reliability.py``.
"""

from __future__ import annotations

import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.events import REASONS, AccessEvent, InvalidEvent, decode_event
from detectors.settings import Settings
from stream.pipeline import MAX_DLQ_VALUE_BYTES, Pipeline, Rejected, encode

SOURCE = {"topic": "access-events", "partition": 0, "offset": 1}
VALID = {"event_id": "e-1", "time": "2026-11-28T14:03:22.123Z", "actor": "agent-0038",
         "role": "support_agent", "team": "support-eu", "action": "read",
         "resource_type": "customer_profile", "customer_id": "c000123",
         "fields": ["email"], "ticket": "T1", "client": "crm-console", "source_ip": "10.1.8.23"}
FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=20)
# Control characters, bidi overrides, zero-width and confusable (Cyrillic/Greek) letters.
hostile_text = st.text(alphabet=st.sampled_from(
    ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u200b", "\u200e", "\u202e", "\u2066", "\ufeff",
     "\u0430", "\u0435", "\u043e", "\u0455", "\u0391", "\u2113", "\ud7ff", "\U0001f600",
     "a", "-", "0"]), min_size=1,
    max_size=40)


def check(pipe: Pipeline, raw: bytes | str) -> AccessEvent | Rejected:
    """Ingest ``raw``: a known outcome, counted, and valid events survive detection."""
    consumed = pipe.metrics.consumed._value.get()
    out = pipe.ingest(raw, SOURCE, key=b"k")
    assert pipe.metrics.consumed._value.get() == consumed + 1
    if isinstance(out, Rejected):
        assert out.reason in REASONS
        assert out.record["reason"] == out.reason and out.record["error"]
        assert len(encode(out.record)) < 1_000_000  # always fits a Kafka message
    else:
        assert isinstance(out, AccessEvent)
        assert decode_event(orjson.dumps(out.to_dict())) == out  # re-keyed form round-trips
        pipe.detect(out)
    return out


def counted(pipe: Pipeline) -> float:
    m = pipe.metrics
    return m.valid._value.get() + sum(
        m.dead_lettered.labels(reason=r)._value.get() for r in REASONS)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    pipe = Pipeline(wall_clock=False)
    check(pipe, raw)
    assert counted(pipe) == 1


@FAST
@given(json_values)
def test_arbitrary_json_values_are_rejected_with_a_reason(value: object) -> None:
    pipe = Pipeline(wall_clock=False)
    out = check(pipe, orjson.dumps(value))
    if not isinstance(value, dict):
        assert isinstance(out, Rejected) and out.reason == "not_an_object"


@FAST
@given(st.sampled_from(sorted(VALID)), json_values | hostile_text, st.booleans())
def test_a_wrong_or_missing_field_is_rejected_or_accepted_never_crashes(
        name: str, value: object, drop: bool) -> None:
    obj = dict(VALID)
    if drop:
        del obj[name]
    else:
        obj[name] = value
    out = check(Pipeline(wall_clock=False), orjson.dumps(obj))
    if drop and name in ("event_id", "time", "actor", "action", "resource_type"):
        assert isinstance(out, Rejected) and out.reason == "missing_field"


@FAST
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1)
       | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
       | st.datetimes().map(lambda d: d.isoformat()))
def test_times_far_in_the_past_or_future(t: object) -> None:
    out = check(Pipeline(wall_clock=False), orjson.dumps({**VALID, "time": t}))
    if isinstance(out, Rejected):
        assert out.reason in ("bad_time", "wrong_type")
    else:
        assert 0 <= out.time_ms < 7_258_118_400_000  # 1970-2199


@FAST
@given(hostile_text, hostile_text)
def test_control_and_confusable_characters_in_ids(actor: str, event_id: str) -> None:
    pipe = Pipeline(wall_clock=False)
    out = check(pipe, orjson.dumps({**VALID, "actor": actor, "event_id": event_id}))
    # Accepted today (SPEC §1 only bounds the length); the text is kept exactly, JSON-escaped
    # on the way out, and never used as a metric label.
    assert isinstance(out, AccessEvent) and out.actor == actor
    labelled = [line for line in pipe.metrics.exposition().decode().splitlines()
                if "{" in line and not line.startswith("#")]
    assert not [line for line in labelled if f'"{actor}"' in line]


def test_nan_infinity_deep_nesting_and_huge_numbers() -> None:
    pipe = Pipeline(wall_clock=False)
    cases = {
        b'{"event_id": "e", "time": NaN}': "invalid_json",
        b'{"records": Infinity}': "invalid_json",
        b'{"records": -Infinity}': "invalid_json",
        b"[" * 100_000 + b"]" * 100_000: "invalid_json",
        b'{"a":' * 5000 + b"1" + b"}" * 5000: "invalid_json",
        orjson.dumps({**VALID, "records": 1e308}): "wrong_type",
        b'{"records": 1e999}': "invalid_json",
        orjson.dumps({**VALID, "records": 2**64 - 1}): None,  # a huge but valid count
        # orjson reads integers beyond 64 bits as floats: not an integer count
        orjson.dumps(VALID)[:-1] + b',"records":123456789012345678901234567890}': "wrong_type",
        b"": "invalid_json",
        b"\xef\xbb\xbf{}": "invalid_json",  # a byte-order mark
        b"\xc0\xaf": "invalid_utf8",
        b'"\xed\xa0\x80"': "invalid_utf8",  # an encoded surrogate
        b"null": "not_an_object",
    }
    for raw, reason in cases.items():
        out = check(pipe, raw)
        got = out.reason if isinstance(out, Rejected) else None
        assert got == reason, (raw[:60], got)
    assert not math.isnan(counted(pipe))


def test_ten_megabyte_messages_are_dead_lettered_unparsed_and_truncated() -> None:
    pipe = Pipeline(Settings(), wall_clock=False)
    big_valid = orjson.dumps({**VALID, "attrs": {"blob": "x" * 10_000_000}})
    big_garbage = b"\xff" * 10_000_000
    for raw in (big_valid, big_garbage):
        out = check(pipe, raw)
        assert isinstance(out, Rejected) and out.reason == "bad_value"
        assert "SNOOPWATCH_MAX_MESSAGE_BYTES" in out.record["error"]
        assert out.record["truncated"] is True and out.record["size"] == len(raw)
        assert out.record["value"] is None
        assert len(out.record["value_b64"]) <= MAX_DLQ_VALUE_BYTES * 4 // 3 + 4
    # Just under the cap it is parsed as usual.
    ok = orjson.dumps({**VALID, "attrs": {"blob": "x" * 400_000}})
    assert isinstance(check(pipe, ok), AccessEvent)


def test_every_reason_is_reachable_and_only_those() -> None:
    pipe = Pipeline(wall_clock=False)
    for raw in (b"\xff", b"{", b"[]", b"{}", orjson.dumps({**VALID, "actor": 5}),
                orjson.dumps({**VALID, "action": "READ"}),
                orjson.dumps({**VALID, "time": "soon"})):
        check(pipe, raw)
    seen = {r for r in REASONS if pipe.metrics.dead_lettered.labels(reason=r)._value.get()}
    assert seen == set(REASONS)
    try:
        decode_event(b"{}")
    except InvalidEvent as err:
        assert err.reason == "missing_field"
