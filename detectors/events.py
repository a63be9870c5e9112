"""The access event (SPEC §1): parsing and validation.

Every rule of SPEC §1 is checked here, once, for both drivers (the faust worker
and ``snoopwatch replay``). A rejected event raises :class:`InvalidEvent` whose
``reason`` is one of a small fixed set (it becomes a metric label, so it must
stay bounded) and whose ``field`` and ``detail`` say exactly what was wrong.

>>> ev = parse_event({"event_id": "e1", "time": "2026-11-28T14:03:22.123Z",
...                   "actor": "alice", "action": "read",
...                   "resource_type": "customer_profile", "customer_id": "c9"})
>>> ev.time_ms, ev.records, ev.outcome
(1795874602123, 1, 'success')
>>> try:
...     parse_event({"event_id": "e2", "time": "yesterday", "actor": "a",
...                  "action": "read", "resource_type": "order"})
... except InvalidEvent as err:
...     print(err.reason, err.field)
bad_time time
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import orjson

# Bounded set of rejection reasons (metric label values).
REASONS = (
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "bad_value",
    "bad_time",
)

EGRESS_ACTIONS = frozenset({"export", "download", "view_stream"})
OUTCOMES = frozenset({"success", "denied", "error"})
MAX_EVENT_ID = 128
# Epoch-millisecond times outside [1970, 2200) are almost certainly a unit
# mistake (seconds or microseconds) rather than a real access time.
_MIN_MS = 0
_MAX_MS = 7_258_118_400_000
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
# RFC 3339 date-time (section 5.6; a space may stand for the T): groups are the
# seconds and the offset.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:(\d\d)(?:\.\d+)?([Zz]|[+-]\d\d:\d\d)")


class InvalidEvent(ValueError):
    """An event (or context entry) that breaks SPEC §1.

    ``reason`` is one of :data:`REASONS`; ``field`` names the offending field
    (or ``None`` for whole-message problems); ``detail`` is a human sentence.
    """

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail


@dataclass(slots=True, frozen=True)
class AccessEvent:
    """A validated access event; ``time_ms`` is event time in epoch milliseconds."""

    event_id: str
    time_ms: int
    actor: str
    action: str
    resource_type: str
    resource_id: str | None = None
    customer_id: str | None = None
    fields: tuple[str, ...] = ()
    records: int = 1
    bytes: int | None = None
    role: str | None = None
    team: str | None = None
    source_ip: str | None = None
    client: str | None = None
    ticket: str | None = None
    outcome: str = "success"
    attrs: dict[str, Any] | None = None

    @property
    def is_egress(self) -> bool:
        return self.action in EGRESS_ACTIONS

    def to_dict(self) -> dict[str, Any]:
        """The event as SPEC §1 JSON (time as epoch milliseconds, defaults filled)."""
        d: dict[str, Any] = {
            "event_id": self.event_id,
            "time": self.time_ms,
            "actor": self.actor,
            "action": self.action,
            "resource_type": self.resource_type,
            "records": self.records,
            "outcome": self.outcome,
        }
        for name in ("resource_id", "customer_id", "bytes", "role", "team",
                     "source_ip", "client", "ticket", "attrs"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        if self.fields:
            d["fields"] = list(self.fields)
        return d


def parse_time(value: Any, field: str = "time") -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds, to epoch ms.

    >>> parse_time("2026-11-28T14:03:22+01:00")
    1795871002000
    >>> parse_time(1795874602123)
    1795874602123
    """
    if isinstance(value, bool):
        raise InvalidEvent("wrong_type", f"{field} must be an RFC 3339 string or "
                           "integer epoch milliseconds, got a boolean", field)
    if isinstance(value, int):
        if not _MIN_MS <= value < _MAX_MS:
            raise InvalidEvent("bad_time", f"{field} {value} is outside the years "
                               "1970-2199 as epoch milliseconds", field)
        return value
    if isinstance(value, str):
        m = _RFC3339.fullmatch(value)
        if m is None:
            raise InvalidEvent("bad_time", f"{field} {value[:40]!r} is not an RFC 3339 "
                               "date-time with an offset (2026-11-28T14:03:22.123Z)", field)
        # fromisoformat alone would take ISO 8601 forms RFC 3339 has not (week dates,
        # no seconds, +0100); the pattern admits only RFC 3339, and a leap second
        # (:60) is read as the next second's start, as POSIX time does.
        leap = m.group(1) == "60"
        text = value[:17] + "59" + value[19:] if leap else value
        if m.group(2) in "Zz":
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:  # the pattern's digits name no real date or time (month 13)
            raise InvalidEvent("bad_time", f"{field} {value[:40]!r} is not a valid "
                               "date-time", field) from None
        ms = math.floor(dt.timestamp() * 1000 + 0.5) + (1000 if leap else 0)
        if not _MIN_MS <= ms < _MAX_MS:
            raise InvalidEvent("bad_time", f"{field} {value[:40]!r} is outside the years "
                               "1970-2199", field)
        return ms
    raise InvalidEvent("wrong_type", f"{field} must be an RFC 3339 string or integer "
                       f"epoch milliseconds, got {type(value).__name__}", field)


def _req_str(obj: dict, name: str) -> str:
    if name not in obj or obj[name] is None:
        raise InvalidEvent("missing_field", f"required field {name!r} is missing", name)
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{name} must be a string, got "
                           f"{type(value).__name__}", name)
    if not value:
        raise InvalidEvent("bad_value", f"{name} must not be empty", name)
    return value


def _opt_str(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{name} must be a string, got "
                           f"{type(value).__name__}", name)
    return value


def _opt_count(obj: dict, name: str, default: int | None) -> int | None:
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent("wrong_type", f"{name} must be an integer, got "
                           f"{type(value).__name__}", name)
    if value < 0:
        raise InvalidEvent("bad_value", f"{name} must be >= 0, got {value}", name)
    return value


@lru_cache(maxsize=65_536)
def _is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (cached: staff use few addresses, and
    parsing one costs ~5 % of the detection core's time)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_event(obj: Any) -> AccessEvent:
    """Validate a decoded JSON value against SPEC §1 and build an :class:`AccessEvent`."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_an_object", "an event must be a JSON object, got "
                           f"{_json_kind(obj)}")
    event_id = _req_str(obj, "event_id")
    if len(event_id) > MAX_EVENT_ID:
        raise InvalidEvent("bad_value", f"event_id is {len(event_id)} characters; "
                           f"at most {MAX_EVENT_ID} are allowed", "event_id")
    if "time" not in obj or obj["time"] is None:
        raise InvalidEvent("missing_field", "required field 'time' is missing", "time")
    time_ms = parse_time(obj["time"])
    actor = _req_str(obj, "actor")
    action = _req_str(obj, "action")
    if action != action.lower():
        raise InvalidEvent("bad_value", f"action must be a lower-case verb, got {action!r}",
                           "action")
    resource_type = _req_str(obj, "resource_type")

    fields_raw = obj.get("fields")
    fields: tuple[str, ...] = ()
    if fields_raw is not None:
        if not isinstance(fields_raw, list) or not all(isinstance(f, str) for f in fields_raw):
            raise InvalidEvent("wrong_type", "fields must be an array of strings", "fields")
        fields = tuple(fields_raw)

    source_ip = _opt_str(obj, "source_ip")
    if source_ip is not None and not _is_ip(source_ip):
        raise InvalidEvent("bad_value", f"source_ip {source_ip[:60]!r} is not an IPv4 or "
                           "IPv6 address", "source_ip")

    outcome = obj.get("outcome")
    if outcome is None:
        outcome = "success"
    elif not isinstance(outcome, str):
        raise InvalidEvent("wrong_type", "outcome must be a string", "outcome")
    elif outcome not in OUTCOMES:
        raise InvalidEvent("bad_value", f"outcome must be success, denied or error, got "
                           f"{outcome[:40]!r}", "outcome")

    attrs = obj.get("attrs")
    if attrs is not None and not isinstance(attrs, dict):
        raise InvalidEvent("wrong_type", "attrs must be an object", "attrs")

    return AccessEvent(
        event_id=event_id,
        time_ms=time_ms,
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=_opt_str(obj, "resource_id"),
        customer_id=_opt_str(obj, "customer_id"),
        fields=fields,
        records=_opt_count(obj, "records", 1),  # type: ignore[arg-type]
        bytes=_opt_count(obj, "bytes", None),
        role=_opt_str(obj, "role"),
        team=_opt_str(obj, "team"),
        source_ip=source_ip,
        client=_opt_str(obj, "client"),
        ticket=_opt_str(obj, "ticket"),
        outcome=outcome,
        attrs=attrs,
    )


def decode_json(raw: bytes | str | None) -> Any:
    """orjson-decode one message, mapping failures to :class:`InvalidEvent`."""
    if not raw:
        raise InvalidEvent("invalid_json", "message is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        if isinstance(raw, bytes | bytearray):
            try:
                bytes(raw).decode("utf-8")
            except UnicodeDecodeError as uerr:
                raise InvalidEvent("invalid_utf8", f"message is not UTF-8 ({uerr.reason} "
                                   f"at byte {uerr.start})") from None
        raise InvalidEvent("invalid_json", f"message is not valid JSON: {err}") from None


def decode_event(raw: bytes | str | None) -> AccessEvent:
    """Decode and validate one raw message (bytes or a JSONL line)."""
    return parse_event(decode_json(raw))


@dataclass(slots=True, frozen=True)
class ContextEntry:
    """A watchlist fact (SPEC §1, Context). ``removed`` entries delete ``kind:id``."""

    kind: str
    id: str
    notice_ms: int | None = None
    last_day: str | None = None
    removed: bool = False

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


CONTEXT_KINDS = frozenset({"vip_customer", "departing_actor"})


def decode_context(raw: bytes | None, key: str | None) -> ContextEntry | None:
    """A context topic message: an empty value removes ``key``'s entry; JSON ``null`` is
    not an empty value, but a malformed entry."""
    if not raw:
        return parse_context(None, key)
    obj = decode_json(raw)
    if obj is None:
        raise InvalidEvent("not_an_object", "a context entry must be a JSON object, got null "
                           "(an empty value removes an entry)")
    return parse_context(obj, key)


def parse_context(obj: Any, key: str | None = None) -> ContextEntry | None:
    """Validate a context entry; ``None`` for unknown kinds (which SPEC says to ignore).

    An empty message (``obj is None``) with a ``kind:id`` key removes that entry.
    """
    if obj is None:
        if not key or ":" not in key:
            raise InvalidEvent("bad_value", "an empty context message needs a 'kind:id' key")
        kind, _, ident = key.partition(":")
        return ContextEntry(kind=kind, id=ident, removed=True) if kind in CONTEXT_KINDS else None
    if not isinstance(obj, dict):
        raise InvalidEvent("not_an_object", "a context entry must be a JSON object, got "
                           f"{_json_kind(obj)}")
    kind = _req_str(obj, "kind")
    if kind not in CONTEXT_KINDS:
        return None  # whatever else it holds: a kind this version does not know
    ident = _req_str(obj, "id")
    if key and key != f"{kind}:{ident}":
        # Compaction and removal go by the key: an entry under another key could never be
        # removed, and would vanish when compaction keeps the key's later value.
        raise InvalidEvent("bad_value", f"key {key[:60]!r} is not the entry's kind:id "
                           f"{kind}:{ident[:60]}", "key")
    notice_ms = None
    last_day = None
    if kind == "departing_actor":
        if obj.get("notice") is not None:
            notice_ms = parse_time(obj["notice"], "notice")
        last_day = _opt_str(obj, "last_day")
        if last_day is not None:
            try:  # fromisoformat alone also takes 20261201 and 2026-W48-6
                if not _DATE.fullmatch(last_day):
                    raise ValueError(last_day)
                date.fromisoformat(last_day)
            except ValueError:
                raise InvalidEvent("bad_value", f"last_day {last_day[:40]!r} is not a "
                                   "YYYY-MM-DD date", "last_day") from None
    return ContextEntry(kind=kind, id=ident, notice_ms=notice_ms, last_day=last_day)


def _json_kind(obj: Any) -> str:
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, int | float):
        return "a number"
    if obj is None:
        return "null"
    return type(obj).__name__
