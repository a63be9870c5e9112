"""SPEC §1: every validation rule, with a bad example and the reason it yields."""

from __future__ import annotations

import orjson
import pytest

from detectors.events import (
    REASONS,
    AccessEvent,
    InvalidEvent,
    decode_context,
    decode_event,
    parse_context,
    parse_event,
)

GOOD = {
    "event_id": "e-1",
    "time": "2026-11-28T14:03:22.123Z",
    "actor": "alice",
    "action": "read",
    "resource_type": "customer_profile",
}


def with_(**changes: object) -> bytes:
    obj = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not DROP})


DROP = object()

BAD = [
    # (message bytes, reason, field)
    (b"\xff\xfe{}", "invalid_utf8", None),
    (b'{"event_id": "e", ', "invalid_json", None),
    (b"", "invalid_json", None),
    (b'{"event_id": NaN}', "invalid_json", None),
    (b"[1, 2]", "not_an_object", None),
    (b'"just a string"', "not_an_object", None),
    (b"null", "not_an_object", None),
    (with_(event_id=DROP), "missing_field", "event_id"),
    (with_(time=DROP), "missing_field", "time"),
    (with_(actor=DROP), "missing_field", "actor"),
    (with_(action=DROP), "missing_field", "action"),
    (with_(resource_type=DROP), "missing_field", "resource_type"),
    (with_(actor=None), "missing_field", "actor"),
    (with_(event_id=17), "wrong_type", "event_id"),
    (with_(event_id=""), "bad_value", "event_id"),
    (with_(event_id="x" * 129), "bad_value", "event_id"),
    (with_(actor=["a"]), "wrong_type", "actor"),
    (with_(action="READ"), "bad_value", "action"),
    (with_(resource_type={"a": 1}), "wrong_type", "resource_type"),
    (with_(time="yesterday"), "bad_time", "time"),
    (with_(time="2026-11-28"), "bad_time", "time"),
    (with_(time="2026-11-28T14:03:22"), "bad_time", "time"),  # no offset
    (with_(time="2026-13-28T14:03:22Z"), "bad_time", "time"),
    # ISO 8601 forms that are not RFC 3339 (Python's fromisoformat takes them all)
    (with_(time="2026-W48-6T14:03:22Z"), "bad_time", "time"),
    (with_(time="2026-11-28T14:03+00:00"), "bad_time", "time"),  # no seconds
    (with_(time="2026-11-28T14:03:22+0100"), "bad_time", "time"),
    (with_(time="2026-11-28T14:03:22.5+01"), "bad_time", "time"),
    (with_(time="2026-11-28T14:03:22,5Z"), "bad_time", "time"),
    (with_(time="2026-11-28T14:03.5+00:00"), "bad_time", "time"),  # would read as :00.5
    (with_(time=" 2026-11-28T14:03:22Z"), "bad_time", "time"),
    (with_(time=1.5e12), "wrong_type", "time"),
    (with_(time=True), "wrong_type", "time"),
    (with_(time=-5), "bad_time", "time"),
    (with_(time=99_999_999_999_999), "bad_time", "time"),
    (with_(records=-1), "bad_value", "records"),
    (with_(records="10"), "wrong_type", "records"),
    (with_(records=2.0), "wrong_type", "records"),
    (with_(records=True), "wrong_type", "records"),
    (with_(bytes=-3), "bad_value", "bytes"),
    (with_(fields="email"), "wrong_type", "fields"),
    (with_(fields=["email", 3]), "wrong_type", "fields"),
    (with_(source_ip="300.1.1.1"), "bad_value", "source_ip"),
    (with_(source_ip=12345), "wrong_type", "source_ip"),
    (with_(ticket=12), "wrong_type", "ticket"),
    (with_(outcome="maybe"), "bad_value", "outcome"),
    (with_(attrs=[1]), "wrong_type", "attrs"),
    (with_(customer_id=5), "wrong_type", "customer_id"),
]


@pytest.mark.parametrize(("raw", "reason", "field"), BAD)
def test_each_rule_rejects_with_its_reason(raw: bytes, reason: str, field: str | None) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    assert info.value.reason == reason
    assert info.value.field == field
    assert info.value.reason in REASONS
    assert info.value.detail  # a human sentence, never empty


def test_every_reason_is_exercised() -> None:
    assert {reason for _, reason, _ in BAD} == set(REASONS)


def test_valid_event_with_every_field() -> None:
    ev = decode_event(orjson.dumps({
        **GOOD, "resource_id": "r1", "customer_id": "c1", "fields": ["email", "phone"],
        "records": 3, "bytes": 2048, "role": "support_agent", "team": "eu",
        "source_ip": "2001:db8::1", "client": "crm", "ticket": "T-9", "outcome": "denied",
        "attrs": {"k": [1, 2]}, "unknown_key": "ignored",
    }))
    assert isinstance(ev, AccessEvent)
    assert ev.fields == ("email", "phone") and ev.records == 3 and ev.outcome == "denied"
    assert ev.attrs == {"k": [1, 2]}
    assert "unknown_key" not in ev.to_dict()


def test_defaults_and_epoch_millis() -> None:
    ev = parse_event({**GOOD, "time": 1_764_338_602_123, "ticket": None})
    assert ev.time_ms == 1_764_338_602_123
    assert ev.records == 1 and ev.outcome == "success" and ev.ticket is None
    assert not ev.is_egress
    assert parse_event({**GOOD, "action": "export"}).is_egress


def test_offsets_are_honoured() -> None:
    utc = parse_event({**GOOD, "time": "2026-11-28T13:00:00Z"}).time_ms
    cet = parse_event({**GOOD, "time": "2026-11-28T14:00:00+01:00"}).time_ms
    assert utc == cet


@pytest.mark.parametrize(("text", "same_as"), [
    ("2026-11-28t14:03:22z", "2026-11-28T14:03:22Z"),  # RFC 3339 allows either case
    ("2026-11-28 14:03:22Z", "2026-11-28T14:03:22Z"),  # and a space for the T
    ("2026-11-28T14:03:22.123456789Z", "2026-11-28T14:03:22.123Z"),
    ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),  # a leap second, as POSIX time
])
def test_rfc3339_forms(text: str, same_as: str) -> None:
    assert (parse_event({**GOOD, "time": text}).time_ms
            == parse_event({**GOOD, "time": same_as}).time_ms)


def test_round_trip_through_to_dict() -> None:
    ev = parse_event({**GOOD, "customer_id": "c1", "fields": ["email"], "ticket": "T1"})
    assert parse_event(ev.to_dict()) == ev


@pytest.mark.parametrize(("obj", "key", "expected"), [
    ({"kind": "vip_customer", "id": "c7"}, None, ("vip_customer", "c7", False)),
    ({"kind": "departing_actor", "id": "bob", "notice": "2026-11-01T09:00:00Z",
      "last_day": "2026-11-30"}, None, ("departing_actor", "bob", False)),
    (None, "vip_customer:c7", ("vip_customer", "c7", True)),
])
def test_context_entries(obj: object, key: str | None, expected: tuple) -> None:
    entry = parse_context(obj, key)
    assert entry is not None
    assert (entry.kind, entry.id, entry.removed) == expected


def test_context_key_must_name_the_entry() -> None:
    entry = {"kind": "vip_customer", "id": "c7"}
    assert parse_context(entry, "vip_customer:c7").id == "c7"
    assert parse_context(entry).id == "c7"  # a file line has no key
    with pytest.raises(InvalidEvent) as info:  # it could never be removed by its key
        parse_context(entry, "vip_customer:c8")
    assert (info.value.reason, info.value.field) == ("bad_value", "key")


def test_context_message_empty_removes_null_is_malformed() -> None:
    removed = decode_context(b"", "vip_customer:c7")
    assert removed is not None and removed.removed and removed.id == "c7"
    with pytest.raises(InvalidEvent) as info:
        decode_context(b"null", "vip_customer:c7")
    assert info.value.reason == "not_an_object"


@pytest.mark.parametrize("obj", [
    {"kind": "weather", "id": "sunny"},
    {"kind": "weather"},  # its fields are its own business
    {"kind": "weather", "id": 5},
])
def test_context_unknown_kind_is_ignored(obj: dict) -> None:
    assert parse_context(obj) is None


@pytest.mark.parametrize(("obj", "reason", "field"), [
    ([1], "not_an_object", None),
    ({"id": "c1"}, "missing_field", "kind"),
    ({"kind": "departing_actor", "id": "bob", "last_day": "soon"}, "bad_value", "last_day"),
    ({"kind": "departing_actor", "id": "bob", "last_day": "20261201"}, "bad_value", "last_day"),
    ({"kind": "departing_actor", "id": "bob", "last_day": "2026-W48-6"}, "bad_value",
     "last_day"),
    ({"kind": "vip_customer"}, "missing_field", "id"),
    ({"kind": "departing_actor", "id": "bob", "notice": "soon"}, "bad_time", "notice"),
])
def test_context_malformed(obj: object, reason: str, field: str | None) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_context(obj)
    assert (info.value.reason, info.value.field) == (reason, field)
