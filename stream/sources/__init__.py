"""Source formats (SPEC §1 "Sources in other formats"): bytes in, SPEC access events out.

One module per format behind one small interface, used by both drivers (the worker's ingest
agent and ``snoopwatch replay``), so no faust here. A source decodes one Kafka message or
one file line into a list of per-record results: a message may hold several records
(CloudTrail's ``{"Records": [...]}``, a JSON array). Each record becomes an
:class:`~detectors.events.AccessEvent` (the mapped dict goes through
:func:`detectors.events.parse_event`, so validation stays in one place) or an
:class:`~detectors.events.InvalidEvent` naming the format and the *source* field.

>>> src = source_for("cloudtrail")
>>> [r.event.actor for r in src.decode(b'{"Records": [{"eventID": "e1", '
...  b'"eventTime": "2024-08-02T08:23:24Z", "eventSource": "s3.amazonaws.com", '
...  b'"eventName": "GetObject", "userIdentity": {"type": "IAMUser", '
...  b'"arn": "arn:aws:iam::1:user/ann"}}]}')]
['arn:aws:iam::1:user/ann']
>>> source_for("nonsense")
Traceback (most recent call last):
...
ValueError: unknown source format 'nonsense': expected spec, cloudtrail, ocsf or mapping:FILE
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

import orjson

from detectors.events import AccessEvent, InvalidEvent, decode_event, decode_json, parse_event

# Metric label values of ``format`` (a fixed set: a mapping file's name is not a label).
FORMATS = ("spec", "cloudtrail", "ocsf", "mapping")


@dataclass(slots=True)
class Record:
    """One record's result: an event, or the error that dead-letters it.

    ``raw`` is the record's own bytes (the whole message when it holds one record; the
    record re-encoded as JSON when it came out of a container); ``index`` is its position
    in the message (``None`` when the message is the record itself).
    """

    event: AccessEvent | None
    error: InvalidEvent | None
    raw: bytes
    index: int | None = None


class Source(Protocol):
    """What a driver needs of a format."""

    format: str  # one of FORMATS (a metric label)
    name: str  # as configured (``mapping:deploy/mappings/nginx.yml``), for messages

    def decode(self, raw: bytes) -> list[Record]:
        """One Kafka message or file line to its records' results (maybe none)."""
        ...


class SpecSource:
    """SPEC §1 events, one per message (today's format, unchanged: an array is rejected)."""

    format = "spec"
    name = "spec"

    def decode(self, raw: bytes) -> list[Record]:
        try:
            return [Record(decode_event(raw), None, raw)]
        except InvalidEvent as err:
            return [Record(None, err, raw)]


class MappedSource:
    """A format whose records are JSON objects mapped onto SPEC fields by :meth:`map`.

    A message holds one record, an array of them, or (``container`` key) an object with
    an array of them. Subclasses set ``format``/``name`` and implement :meth:`map`, which
    returns the SPEC dict and, per SPEC field, the source field it came from (so that
    :func:`parse_event`'s complaint names the source field).
    """

    format = "?"
    name = "?"
    container: str | None = None

    def map(self, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        raise NotImplementedError

    def records(self, value: Any) -> list[Any] | None:
        """The records of a decoded message, or None when it is a single record."""
        if isinstance(value, list):
            return value
        if (self.container and isinstance(value, dict)
                and isinstance(value.get(self.container), list)):
            return value[self.container]
        return None

    def decode(self, raw: bytes) -> list[Record]:
        try:
            value = decode_json(raw)
        except InvalidEvent as err:
            return [Record(None, self._named(err), raw)]
        many = self.records(value)
        if many is None:
            return [self.one(value, raw, None)]
        return [self.one(rec, orjson.dumps(rec), i) for i, rec in enumerate(many)]

    def one(self, value: Any, raw: bytes, index: int | None) -> Record:
        try:
            if not isinstance(value, dict):
                raise InvalidEvent("not_an_object", f"a record must be a JSON object, got "
                                   f"{type(value).__name__}")
            mapped, origin = self.map(value)
            try:
                ev = parse_event(mapped)
            except InvalidEvent as err:
                field = origin.get(err.field or "", err.field)
                raise InvalidEvent(err.reason, f"{field}: {err.detail}", field) from None
            return Record(ev, None, raw, index)
        except InvalidEvent as err:
            return Record(None, self._named(err), raw, index)

    def _named(self, err: InvalidEvent) -> InvalidEvent:
        """The error with the format in front (``cloudtrail: eventTime missing``)."""
        if err.detail.startswith(self.name + ": "):
            return err
        return InvalidEvent(err.reason, f"{self.name}: {err.detail}", err.field)


def get_path(obj: Any, path: str) -> Any:
    """The value at a dotted path (``userIdentity.sessionContext.sessionIssuer.arn``;
    a number indexes an array), or None.

    >>> get_path({"a": {"b": [{"c": 3}]}}, "a.b.0.c"), get_path({"a": 1}, "a.x")
    (3, None)
    """
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
        if obj is None:
            return None
    return obj


def source_for(spec: str, *, cloudtrail_customer: str = "bucket") -> Source:
    """The source of a format name: ``spec``, ``cloudtrail``, ``ocsf`` or ``mapping:FILE``.

    ``cloudtrail_customer`` says which field is a CloudTrail record's data subject
    (``bucket``: the S3 bucket, else the account; ``account``; ``none``).
    """
    if spec == "spec":
        return SpecSource()
    if spec == "cloudtrail":
        from stream.sources.cloudtrail import CloudTrailSource

        return CloudTrailSource(customer=cloudtrail_customer)
    if spec == "ocsf":
        from stream.sources.ocsf import OcsfSource

        return OcsfSource()
    if spec.startswith("mapping:") and len(spec) > len("mapping:"):
        from stream.sources.mapping import MappingSource

        return MappingSource.from_file(spec[len("mapping:"):])
    raise ValueError(f"unknown source format {spec!r}: expected spec, cloudtrail, ocsf or "
                     "mapping:FILE")


def parse_sources(text: str, default_topic: str) -> list[tuple[str, str]]:
    """``SNOOPWATCH_SOURCES`` (``spec:access-events,cloudtrail:raw-cloudtrail``) as
    ``[(format spec, topic)]``; empty: ``spec`` on the default input topic.

    The topic is after the last colon (topic names have none; a mapping file may).

    >>> parse_sources("spec:a, mapping:m/app.yml:b", "x")
    [('spec', 'a'), ('mapping:m/app.yml', 'b')]
    >>> parse_sources("", "access-events")
    [('spec', 'access-events')]
    """
    out: list[tuple[str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        fmt, sep, topic = part.rpartition(":")
        if not sep or not fmt or not topic:
            raise ValueError(f"SNOOPWATCH_SOURCES entry {part!r} is not FORMAT:TOPIC")
        out.append((fmt, topic))
    topics = [t for _, t in out]
    if len(set(topics)) != len(topics):
        raise ValueError(f"SNOOPWATCH_SOURCES names a topic twice: {text!r}")
    return out or [("spec", default_topic)]


def open_input(path: str) -> IO[bytes]:
    """A file for reading, gunzipped on the fly when it is gzip (by its magic bytes)."""
    fh = open(path, "rb")  # noqa: SIM115 (returned open, the caller closes it)
    if fh.peek(2)[:2] == b"\x1f\x8b":
        return gzip.open(fh)  # type: ignore[return-value]
    return fh


def file_units(path: str, source: Source) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(where, bytes) units of a file, each one message's worth for ``source.decode``.

    JSONL (one value per line) streams line by line. A file that is one JSON document
    over several lines (a CloudTrail ``{"Records": [...]}`` file, a pretty-printed array)
    is read whole and split into its records (``where`` names the record). SPEC files are
    always JSONL.
    """
    with open_input(path) as fh:
        first = fh.readline()
        if (source.format != "spec" and first.strip() and _incomplete(first)):
            text = first + fh.read()
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                pass  # not one document either: line by line, where line 1 is rejected
            else:
                split: Callable[[Any], list[Any] | None] = getattr(
                    source, "records", lambda v: None)
                many = split(value)
                if many is None:
                    yield {"file": path, "line": 1}, text.strip()
                else:
                    for i, rec in enumerate(many):
                        yield {"file": path, "record": i}, orjson.dumps(rec)
                return
            lines = text.splitlines(keepends=True)
        else:
            lines = _chain(first, fh)
        for n, line in enumerate(lines, 1):
            yield {"file": path, "line": n}, line.rstrip(b"\r\n")


def _chain(first: bytes, rest: IO[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _incomplete(line: bytes) -> bool:
    """Whether a first line is not a JSON value on its own (a multi-line document starts)."""
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return True
    return False
