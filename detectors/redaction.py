"""Keep customer data where it belongs (issue 17): what dead letters and alerts keep of it.

``SNOOPWATCH_DLQ_PAYLOAD`` decides what a dead letter keeps of the rejected message:
``full`` (the default: its bytes, to fix and re-send), ``redacted`` (a keyed hash of the
bytes and of the message key, plus the reason and the name of the field that failed; the
error text is dropped, as it may quote a value) or ``none`` (reason, field, origin and size
only). The original stays on the input topic at the dead letter's ``source`` for as long as
that topic keeps it.

``SNOOPWATCH_ALERT_ATTRS`` makes the same choice for event ``attrs`` an alert carries.

The hash is HMAC-SHA256 under a key of our own, so that equal values give equal hashes
(a dead letter can be matched to the original, two dead letters to each other) while the
value cannot be recovered by hashing guesses, as a plain hash of an e-mail address could.
The key comes from ``SNOOPWATCH_REDACTION_KEY_FILE``, else from a random key made once and
kept beside the worker's state (``state/redaction.key``); workers that must give equal
hashes share a key file.

>>> r = Redactor("redacted", b"k" * 32)
>>> rec = {"reason": "bad_value", "field": "source_ip", "error": "source_ip '10.0.0.999' is",
...        "source": {"line": 1}, "key": "alice", "value": "{...}", "value_b64": "e30="}
>>> out = r.dead_letter(rec, b'{"source_ip": "10.0.0.999"}')
>>> out["field"], out["error"], out["value"], out["value_b64"], out["payload"]
('source_ip', None, None, None, 'redacted')
>>> out["value_hmac"] == r.hash(b'{"source_ip": "10.0.0.999"}'), out["key"] == r.hash(b"alice")
(True, True)
>>> Redactor("none", b"k").dead_letter(rec, b"{}")
{'reason': 'bad_value', 'field': 'source_ip', 'source': {'line': 1}, 'size': 2, 'payload': 'none'}
>>> Redactor("full", b"k").dead_letter(rec, b"{}") is rec
True
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

from detectors.settings import PREFIX, Settings

MODES = ("full", "redacted", "none")
KEY_BYTES = 32


class Redactor:
    """Applies one mode (``full``, ``redacted`` or ``none``) with one key."""

    __slots__ = ("_key", "mode")

    def __init__(self, mode: str, key: bytes) -> None:
        if mode not in MODES:
            raise ValueError(f"redaction mode {mode!r}: must be full, redacted or none")
        self.mode = mode
        self._key = key

    def __repr__(self) -> str:  # never the key
        return f"Redactor({self.mode!r})"

    def hash(self, data: bytes) -> str:
        """``hmac-sha256:`` + the hex HMAC-SHA256 of ``data`` under the key."""
        return "hmac-sha256:" + hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def dead_letter(self, record: dict[str, Any], data: bytes) -> dict[str, Any]:
        """A dead-letter record (stream.pipeline.dead_letter) as this mode keeps it;
        ``data``: the rejected message's bytes."""
        if self.mode == "full":
            return record
        kept = {k: record[k] for k in ("reason", "field", "source", "dead_lettered_at")
                if k in record}
        kept["size"] = record.get("size", len(data))
        kept["payload"] = self.mode
        if self.mode == "redacted":
            key = record.get("key")
            kept.update(error=None, key=None if key is None else self.hash(key.encode()),
                        value=None, value_b64=None, value_hmac=self.hash(data))
        return kept

    def attrs(self, attrs: dict[str, Any] | None) -> dict[str, Any] | None:
        """Event ``attrs`` as this mode keeps them: as they are, each value a keyed hash
        of its JSON, or none at all.

        >>> Redactor("redacted", b"k").attrs({"route": "/a"})["route"][:12]
        'hmac-sha256:'
        >>> Redactor("none", b"k").attrs({"route": "/a"}) is None
        True
        """
        if attrs is None or self.mode == "full":
            return attrs
        if self.mode == "none":
            return None
        import orjson

        return {k: self.hash(orjson.dumps(v)) for k, v in attrs.items()}

    def alert(self, alert: dict[str, Any]) -> dict[str, Any]:
        """An alert with the ``attrs`` it carries (if any) kept as this mode says."""
        if self.mode == "full" or "attrs" not in alert:
            return alert
        out = dict(alert)
        kept = self.attrs(out.pop("attrs"))
        if kept is not None:
            out["attrs"] = kept
        return out


def key_path(settings: Settings) -> Path:
    """Where the per-install key lives: beside the worker's state dir (``state/``)."""
    return Path(settings.data_dir).parent / "redaction.key"


def redaction_key(settings: Settings) -> bytes:
    """The HMAC key: ``SNOOPWATCH_REDACTION_KEY_FILE``'s bytes, else the per-install key
    (made once, mode 600)."""
    if settings.redaction_key_file:
        try:
            key = Path(settings.redaction_key_file).read_bytes().strip()
        except OSError as err:
            raise ValueError(f"{PREFIX}REDACTION_KEY_FILE={settings.redaction_key_file}: "
                             f"cannot read ({err.strerror})") from None
        if len(key) < 16:
            raise ValueError(f"{PREFIX}REDACTION_KEY_FILE={settings.redaction_key_file}: "
                             "the key must be at least 16 bytes")
        return key
    path = key_path(settings)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    try:  # O_EXCL: two workers starting together keep the first one's key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def dlq_redactor(settings: Settings) -> Redactor | None:
    """The dead-letter redactor of these settings; None for ``full`` (nothing to do)."""
    if settings.dlq_payload == "full":
        return None
    key = redaction_key(settings) if settings.dlq_payload == "redacted" else b""
    return Redactor(settings.dlq_payload, key)


def alert_redactor(settings: Settings) -> Redactor | None:
    """The alert ``attrs`` redactor of these settings; None for ``full``."""
    if settings.alert_attrs == "full":
        return None
    key = redaction_key(settings) if settings.alert_attrs == "redacted" else b""
    return Redactor(settings.alert_attrs, key)
