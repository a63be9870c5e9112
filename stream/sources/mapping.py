"""``mapping:FILE``: any JSON access log, mapped onto SPEC fields by a declarative file.

The file (YAML or JSON) names, per SPEC field, where its value comes from::

    name: app-audit              # used in error messages (default: the file's stem)
    records: items               # optional: a message's records are this array
    subject: target.customer     # the data subject: shorthand for customer_id's path
    fields:
      event_id: id               # a dotted path (numbers index arrays)
      time: {path: ts, unit: s}  # unit: s or ms for epoch numbers (RFC 3339 strings as is)
      actor: [user.email, user.id]          # the first present of several paths
      action: {path: verb, map: {GET: read, DELETE: delete}, default: read, lower: true}
      resource_type: {value: customer_profile}   # a constant
      bytes: {path: size, type: int}        # "1234" → 1234
      attrs: {status: http.status, route: http.route}   # attrs: name → path
    hash_id: true                # no event id in the log: derive one from the record's bytes

Entries: ``path`` (or a list of paths; an empty string counts as absent), ``value`` (a
constant), ``map`` (source value → SPEC value; a value not in the map becomes ``default``
if there is one, is dead-lettered as ``bad_value`` with ``strict: true``, and passes
through otherwise), ``default`` (when the path is absent), ``lower``, ``unit`` (``s`` or
``ms``, for epoch numbers), ``type`` (``int`` or ``str``). Validation of the result is
SPEC §1's (``parse_event``); the error names the source path.

>>> src = MappingSource({"name": "web", "subject": "tenant", "fields": {
...     "event_id": "rid", "time": {"path": "ts", "unit": "s"}, "actor": "user",
...     "action": {"path": "m", "map": {"GET": "read"}}, "resource_type": {"value": "page"},
...     "bytes": {"path": "len", "type": "int"}}})
>>> ev = src.one({"rid": "r1", "ts": 1795874602.5, "user": "ann", "m": "GET",
...               "tenant": "acme", "len": "12"}, b"", None).event
>>> ev.time_ms, ev.action, ev.customer_id, ev.bytes
(1795874602500, 'read', 'acme', 12)
>>> src.one({"rid": "r2", "ts": 1, "m": "GET"}, b"", None).error.detail
'mapping web: user missing (required for actor)'
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import orjson

from detectors.events import InvalidEvent
from stream.sources import MappedSource, get_path

SPEC_FIELDS = ("event_id", "time", "actor", "action", "resource_type", "resource_id",
               "customer_id", "fields", "records", "bytes", "role", "team", "source_ip",
               "client", "ticket", "outcome", "attrs")
REQUIRED = ("event_id", "time", "actor", "action", "resource_type")
ENTRY_KEYS = {"path", "value", "map", "default", "lower", "unit", "type", "strict"}


class MappingError(ValueError):
    """A mapping file that cannot be used (named, with what is wrong)."""


class MappingSource(MappedSource):
    format = "mapping"

    def __init__(self, spec: dict[str, Any], where: str = "mapping") -> None:
        if not isinstance(spec, dict) or not isinstance(spec.get("fields"), dict):
            raise MappingError(f"{where}: a mapping needs a 'fields' object")
        self.name = f"mapping {spec.get('name') or where}"
        self.container = spec.get("records")
        self.hash_id = bool(spec.get("hash_id"))
        fields = dict(spec["fields"])
        if spec.get("subject"):
            fields.setdefault("customer_id", spec["subject"])
        self.entries: dict[str, dict[str, Any]] = {}
        for name, entry in fields.items():
            if name not in SPEC_FIELDS:
                raise MappingError(f"{where}: fields.{name} is not a SPEC event field "
                                   f"({', '.join(SPEC_FIELDS)})")
            if name == "attrs":
                if not isinstance(entry, dict):
                    raise MappingError(f"{where}: fields.attrs must map attribute names to "
                                       "paths")
                continue
            if isinstance(entry, str | list):
                entry = {"path": entry}
            if not isinstance(entry, dict) or not set(entry) <= ENTRY_KEYS:
                raise MappingError(f"{where}: fields.{name} must be a path, a list of paths "
                                   f"or an object of {sorted(ENTRY_KEYS)}")
            if "path" not in entry and "value" not in entry:
                raise MappingError(f"{where}: fields.{name} has neither path nor value")
            paths = entry.get("path", [])
            entry["paths"] = [paths] if isinstance(paths, str) else list(paths)
            if entry.get("unit") not in (None, "s", "ms"):
                raise MappingError(f"{where}: fields.{name}.unit must be s or ms")
            if entry.get("type") not in (None, "int", "str"):
                raise MappingError(f"{where}: fields.{name}.type must be int or str")
            self.entries[name] = entry
        self.attrs: dict[str, str] = dict(fields.get("attrs") or {})
        missing = [f for f in REQUIRED if f not in self.entries
                   and not (f == "event_id" and self.hash_id)]
        if missing:
            raise MappingError(f"{where}: no mapping for required field(s) "
                               f"{', '.join(missing)} (event_id may be hash_id: true)")

    @classmethod
    def from_file(cls, path: str) -> MappingSource:
        """Load a ``.yml``/``.yaml`` (PyYAML) or ``.json`` mapping file."""
        try:
            with open(path, "rb") as fh:
                text = fh.read()
        except OSError as err:
            raise MappingError(f"mapping file {path}: {err.strerror}") from None
        try:
            if path.endswith((".yml", ".yaml")):
                import yaml

                spec = yaml.safe_load(text)
            else:
                spec = orjson.loads(text)
        except Exception as err:  # YAML and JSON errors alike: name the file
            raise MappingError(f"mapping file {path}: not valid YAML/JSON: "
                               f"{str(err).splitlines()[0]}") from None
        src = cls(spec, path)
        if not (isinstance(spec, dict) and spec.get("name")):
            src.name = f"mapping {os.path.splitext(os.path.basename(path))[0]}"
        return src

    def map(self, r: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        ev: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for name, entry in self.entries.items():
            value, path = None, None
            for p in entry["paths"]:
                value = get_path(r, p)
                if value == "":  # an empty string in a log means "not known" (nginx, CSV)
                    value = None
                if value is not None:
                    path = p
                    break
            if value is None:
                if "value" in entry:
                    value = entry["value"]
                elif "default" in entry:
                    value = entry["default"]
            where = path or (entry["paths"][0] if entry["paths"] else "value")
            origin[name] = where
            if value is None:
                if name in REQUIRED and not (name == "event_id" and self.hash_id):
                    raise InvalidEvent("missing_field", f"{where} missing (required for "
                                       f"{name})", where)
                continue
            if path is not None and "map" in entry:
                key = value if isinstance(value, str) else orjson.dumps(value).decode()
                if key in entry["map"]:
                    value = entry["map"][key]
                elif entry.get("strict"):
                    raise InvalidEvent("bad_value", f"{where} value {key[:40]!r} is not in "
                                       f"the mapping for {name}", where)
                elif "default" in entry:
                    value = entry["default"]
            if entry.get("lower") and isinstance(value, str):
                value = value.lower()
            value = self._convert(name, entry, value, where)
            ev[name] = value
        if "event_id" not in ev and self.hash_id:
            ev["event_id"] = hashlib.blake2b(orjson.dumps(r, option=orjson.OPT_SORT_KEYS),
                                             digest_size=16).hexdigest()
            origin["event_id"] = "(hash of the record)"
        attrs = {k: v for k, p in self.attrs.items() if (v := get_path(r, p)) is not None}
        if attrs:
            ev["attrs"] = attrs
        return ev, origin

    @staticmethod
    def _convert(name: str, entry: dict[str, Any], value: Any, where: str) -> Any:
        unit = entry.get("unit")
        if unit and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise InvalidEvent("bad_time", f"{where} is not a finite number", where)
            return round(value * 1000) if unit == "s" else int(value)
        kind = entry.get("type")
        if kind == "int" and isinstance(value, str | float) and not isinstance(value, bool):
            try:
                return int(value) if isinstance(value, str) else (
                    int(value) if value.is_integer() else value)
            except ValueError:
                raise InvalidEvent("wrong_type", f"{where} {value[:40]!r} is not an "
                                   "integer", where) from None
        if kind == "str" and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value
