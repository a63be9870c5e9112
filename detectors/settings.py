"""One settings object for snoopwatch, read from ``SNOOPWATCH_*`` environment variables.

Every field's environment variable is ``SNOOPWATCH_`` + the upper-cased field
name, and its docstring is the comment-string right under it (shown by
``snoopwatch settings``). Both drivers (worker and replay) read the same object.

>>> s = Settings.from_env({"SNOOPWATCH_ALERT_THRESHOLD": "70", "SNOOPWATCH_WEB_PORT": "7000"})
>>> s.alert_threshold, s.web_port, s.input_topic
(70.0, 7000, 'access-events')
>>> [Settings.from_env({"SNOOPWATCH_DETECT_IN_PLACE": v}).detect_in_place for v in ("1", "off")]
[True, False]
>>> Settings.from_env({"SNOOPWATCH_DETECT_IN_PLACE": "maybe"})
Traceback (most recent call last):
ValueError: SNOOPWATCH_DETECT_IN_PLACE='maybe': expected bool
>>> Settings.from_env({"SNOOPWATCH_ALERT_THRESHOLD": "0"})
Traceback (most recent call last):
ValueError: SNOOPWATCH_ALERT_THRESHOLD=0.0: must be in (0, 100]: risk is 0-100
"""

from __future__ import annotations

import ast
import inspect
import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

PREFIX = "SNOOPWATCH_"


@dataclass(frozen=True, slots=True)
class Settings:
    broker: str = "kafka://127.0.0.1:9092"
    """Kafka bootstrap server(s), faust URL form (``kafka://host:port;host2:port``)."""
    input_topic: str = "access-events"
    """Topic of access events (SPEC §1)."""
    alerts_topic: str = "access-alerts"
    """Topic alerts are written to (SPEC §2), keyed by actor."""
    dlq_topic: str = "access-events-dlq"
    """Dead-letter topic: each rejected message with its reason and origin."""
    context_topic: str = "access-context"
    """Compacted topic of watchlist context entries (VIP customers, departing staff)."""
    sources: str = ""
    """Input topics with their formats, ``FORMAT:TOPIC,...`` (``spec``, ``cloudtrail``,
    ``ocsf``, ``mapping:FILE``; docs/sources.md); empty: ``spec:`` + the input topic."""
    cloudtrail_customer: str = "bucket"
    """A CloudTrail record's data subject (customer_id): bucket (else account), account or none."""
    ocsf_topic: str = ""
    """Topic each alert is also written to as an OCSF Detection Finding; empty: off."""
    app_id: str = "snoopwatch"
    """Kafka consumer group and prefix of internal topics; workers sharing it share the load."""
    partitions: int = 4
    """Partitions of the internal by-actor topic (the unit of scale-out)."""
    web_host: str = "127.0.0.1"
    """Address the worker's HTTP server (``/metrics``) binds to; a non-loopback one needs
    SNOOPWATCH_WEB_TOKEN_FILE (or SNOOPWATCH_WEB_ALLOW_OPEN=1)."""
    web_port: int = 6066
    """Port of the worker's HTTP server; give each worker on one host its own."""
    data_dir: str = "state/worker"
    """Folder for the worker's local state (faust tables)."""
    log_level: str = "info"
    """Worker log level: debug, info, warning or error."""

    seed: int = 0
    """Seed of the randomised models (the multivariate isolation forest); same seed, same output."""
    alert_threshold: float = 60.0
    """Risk (0-100) at which an actor's alert opens."""
    adaptive_quantile: float = 0.9
    """Quantile of a peer group's hourly peak risk that, plus the margin, can raise its bar.

    A middle quantile, not a tail one: the tail of a group's hours is where its insiders
    are, and a bar that follows them would hide them."""
    adaptive_margin: float = 40.0
    """Risk added to that quantile: the bar is max(threshold, quantile + margin)."""
    adaptive_min_hours: int = 500
    """Actor-hours a peer group needs before its adaptive alert bar applies."""
    close_ratio: float = 0.5
    """An open alert episode closes once a day (event time) passes without the actor's risk
    at threshold x this ratio."""
    false_alert_budget: float = 1.0
    """Expected false alerts per 1,000 actor-days: the alert bar rises to the risk that
    ordinary actor-days exceed this often (estimated from the bulk of all actor-days seen,
    docs/detection.md); never below ``alert_threshold``. 0: off."""
    disabled_signals: str = ""
    """Signals never raised, comma-separated (``unjustified,off_hours``; names as in alerts'
    ``reasons[].detector``, docs/detection.md): to measure what one adds, or to silence one
    that does not fit a source. Unknown names are refused at start."""
    optional_signals: str = ""
    """Optional signals to raise as well, comma-separated (``multivariate``: off by default,
    docs/detection.md). They run and learn either way, so naming one needs no warm-up."""
    min_history_hours: int = 6
    """Active hours an actor needs before its own volume baseline is trusted."""
    min_history_events: int = 30
    """Events an actor needs before first-seen and ticket-habit signals count."""
    volume_min_count: int = 10
    """Hourly records or customers below this never count as a volume anomaly."""
    decay_half_life_s: float = 3600.0
    """Half-life, in seconds of event time, of each detector's contribution to risk."""
    long_half_life_s: float = 7 * 86400.0
    """Half-life, in seconds of event time, of the long-term risk that adds up weak signals."""
    long_term_weight: float = 0.4
    """Long-term weight of one unjustified customer read (x4 for a VIP customer)."""
    max_tracked_customers: int = 5000
    """Cap on distinct customers remembered per actor per hour (bounds memory)."""
    max_customers: int = 1_000_000
    """Cap on customers whose serving teams are remembered (the queue map; LRU)."""
    max_profile_values: int = 256
    """Cap on distinct values per first-seen profile (client, network, action) per actor."""
    max_pending_ops: int = 2_000_000
    """Cap on cross-actor ops waiting for the hourly schedule (~60 bytes each). Reached only
    when the event-time clock is stuck (input stamped over a day ahead of the worker's wall
    clock): they are then applied at once, so peer state keeps learning and memory stays
    bounded, at the price of the schedule's sharding independence for that input."""

    # --- reliability (issue 4) ---
    max_message_bytes: int = 512 * 1024
    """Input messages larger than this are dead-lettered (bad_value) unparsed; events are < 4 KB."""
    dedup_window: int = 256
    """Recent event_ids remembered per actor; a re-delivered one is counted once (duplicate)."""
    checkpoint_interval_s: float = 5.0
    """Seconds between checkpoints of changed actors' state to the state topic: what a crash
    re-reads at most (longer when checkpoints are expensive); shorter costs throughput (with
    10k busy actors, 1 s drained 13 % fewer events than 5 s: each checkpoint rewrites them)."""
    detect_in_place: bool = True
    """Detect events keyed by actor in the ingest agent, skipping the re-key hop (~2x the
    throughput); events keyed otherwise still take the hop. 0: every event takes the hop."""
    input_merge_wait_s: float = 1.0
    """Events that take the hop (input not keyed by actor) are forwarded in event-time order
    across the input partitions a worker holds (stream/merge.py): the longest a partition
    that still has events to read holds the others' back. 0: forward in arrival order."""
    peer_ops_retention_s: float = 30 * 86400.0
    """How long the ``<app_id>-peer-ops`` topic keeps a record (its ``retention.ms``, set by
    the worker and ``create-topics``, on an existing topic too); 0 keeps them for ever. Far
    longer than any checkpoint can be old when restored (docs/operations.md)."""
    fetch_max_wait_ms: int = 50
    """How long the broker may hold a fetch that finds no new data. faust fixes 1.5 s: a
    fetch that happens to cover only idle partitions (the by-actor topic, with in-place
    detection) then holds the busy partitions' next fetch back that long (~1 s latency)."""
    peer_barrier: bool = True
    """Share cross-actor ops between workers at each event-time hour (the
    ``<app_id>-peer-ops`` topic and its barrier, docs/operations.md): every worker's alerts
    are then those of one engine, whatever it holds. 0: each worker learns cross-actor state
    from its own partitions only (before issue 15 item 2; for comparison)."""
    idle_close_s: float = 10.0
    """Seconds a partition must have had no new event, with its consumer at the log end,
    before its holder closes the hour the others wait in for it (peer-ops barrier); an idle
    partition then follows the others at once until its next event."""
    worker_id: str = ""
    """This worker's name, stable across its restarts and unique among the app's live workers
    (a systemd instance, a StatefulSet pod): its checkpoints' Kafka transactional id, so that
    a restart aborts the transaction its dead self left open at once. Empty: host:pid (stable
    only as a container's pid 1; elsewhere a restart waits SNOOPWATCH_TRANSACTION_TIMEOUT_S)."""
    transaction_timeout_s: float = 60.0
    """Seconds before the broker aborts a checkpoint transaction left open by a worker that
    died: until then every reader of its partitions (restores, the peer-ops barrier of every
    worker) waits. A checkpoint must commit within it (at most the broker's
    transaction.max.timeout.ms, 900 by default)."""
    session_timeout_s: float = 10.0
    """Kafka consumer session timeout: a killed worker's partitions move after this long."""
    actor_ttl_s: float = 30 * 86400.0
    """Seconds of event time after an actor's last event before its state is expired; 0: never."""
    hot_actors: int = 50_000
    """Actors whose state is kept ready; the least recently active beyond this many are kept
    compressed (~1.5-2 kB instead of ~8 kB) until their next event. Lossless: results do
    not change, only ~0.2 ms per freeze and thaw is spent. 0: never compress."""

    # --- security (issue 17; docs/operations.md Security) ---
    security_protocol: str = "PLAINTEXT"
    """Kafka connection security: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str = ""
    """SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""
    sasl_username: str = ""
    """SASL user name."""
    sasl_password_file: str = ""
    """File whose first line is the SASL password (the secret itself is never an environment
    value, never shown)."""
    ssl_cafile: str = ""
    """PEM CA certificate(s) the broker's certificate must chain to; empty: the system's CAs."""
    ssl_certfile: str = ""
    """PEM client certificate, for brokers that require mutual TLS."""
    ssl_keyfile: str = ""
    """PEM private key of the client certificate (a secret: a mounted file)."""
    web_certfile: str = ""
    """PEM certificate for HTTPS on the worker's web server; empty: plain HTTP."""
    web_keyfile: str = ""
    """PEM private key for SNOOPWATCH_WEB_CERTFILE."""
    web_token_file: str = ""
    """File holding the bearer token every web page but /metrics and /health requires."""
    web_allow_open: bool = False
    """Allow a non-loopback SNOOPWATCH_WEB_HOST without a token (e.g. behind an auth proxy)."""
    dlq_payload: str = "full"
    """What a dead letter keeps of the original message: full (its bytes), redacted (a keyed
    hash plus the failing field) or none."""
    alert_attrs: str = "full"
    """What an alert keeps of event ``attrs`` it carries: full, redacted (keyed hashes) or none."""
    redaction_key_file: str = ""
    """Key of the redaction hashes (HMAC-SHA256); empty: a random key kept in
    state/redaction.key."""

    alertmanager_url: str = ""
    """Alertmanager base URL for ``snoopwatch forward-alertmanager`` (e.g.
    ``http://127.0.0.1:9093``); empty: the command needs ``--url``."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            check = _RULES.get(f.name)
            if check is None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                check = _NOT_NEGATIVE
            ok, rule = check
            if not ok(value):
                raise ValueError(f"{PREFIX}{f.name.upper()}={value!r}: must be {rule}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SNOOPWATCH_*`` variables (``os.environ`` by default)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            kind = type(f.default)
            try:
                values[f.name] = _flag(raw) if kind is bool else kind(raw)
            except ValueError:
                raise ValueError(f"{PREFIX}{f.name.upper()}={raw!r}: expected "
                                 f"{kind.__name__}") from None
        values.update(overrides)
        return cls(**values)

    @property
    def disabled(self) -> tuple[str, ...]:
        """``disabled_signals`` as names.

        >>> Settings(disabled_signals=" unjustified, vip,").disabled
        ('unjustified', 'vip')
        """
        return _names(self.disabled_signals)

    @property
    def optional(self) -> tuple[str, ...]:
        """``optional_signals`` as names."""
        return _names(self.optional_signals)

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """These settings as ``SNOOPWATCH_*`` variables, for a worker subprocess."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


def _names(listed: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in listed.split(",") if n.strip())


# Values that would silently misbehave (a bar no risk reaches, an episode that never
# closes, a half-life that divides by zero) are refused when the settings are built.
# Every other number is a count, a size or a duration: never negative.
_NOT_NEGATIVE: tuple[Callable[[Any], bool], str] = (lambda v: v >= 0, ">= 0")
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: True, "any integer"),
    "alert_threshold": (lambda v: 0 < v <= 100, "in (0, 100]: risk is 0-100"),
    "adaptive_quantile": (lambda v: 0 < v < 1, "in (0, 1)"),
    "close_ratio": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "decay_half_life_s": (lambda v: v > 0, "> 0"),
    "long_half_life_s": (lambda v: v > 0, "> 0"),
    "partitions": (lambda v: v >= 1, ">= 1"),
    "web_port": (lambda v: 0 <= v <= 65535, "a port, 0-65535"),
    "log_level": (lambda v: v.lower() in ("debug", "info", "warning", "error"),
                  "debug, info, warning or error"),
    "checkpoint_interval_s": (lambda v: v > 0, "> 0"),
    "session_timeout_s": (lambda v: v > 0, "> 0"),
    "transaction_timeout_s": (lambda v: 1 <= v <= 900,
                              "in [1, 900]: the broker's transaction.max.timeout.ms caps it"),
    "worker_id": (lambda v: v == v.strip() and all(c.isprintable() for c in v),
                  "printable, without surrounding spaces"),
    "max_message_bytes": (lambda v: v >= 1, ">= 1"),
    "cloudtrail_customer": (lambda v: v in ("bucket", "account", "none"),
                            "bucket, account or none"),
    "dlq_payload": (lambda v: v in ("full", "redacted", "none"), "full, redacted or none"),
    "alert_attrs": (lambda v: v in ("full", "redacted", "none"), "full, redacted or none"),
}


def _flag(raw: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, docstring) for every field, in order."""
    docs = _field_docs()
    return [(PREFIX + f.name.upper(), repr(f.default), docs.get(f.name, ""))
            for f in fields(Settings)]


def _field_docs() -> dict[str, str]:
    # Attribute docstrings are not kept at runtime; read them from the source.
    tree = ast.parse(inspect.getsource(Settings))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = str(nxt.value.value)
    return docs


def bootstrap_servers(broker: str) -> str:
    """A faust broker URL (``kafka://a:9092;kafka://b:9092``) as aiokafka's ``a:9092,b:9092``.

    >>> bootstrap_servers("kafka://127.0.0.1:9092;kafka://10.0.0.2:9092")
    '127.0.0.1:9092,10.0.0.2:9092'
    >>> bootstrap_servers("a:9092, kafka://b:9093")
    'a:9092,b:9093'
    """
    hosts = [h.strip().split("://", 1)[-1].rstrip("/")
             for h in broker.replace(";", ",").split(",")]
    hosts = [h for h in hosts if h]
    if not hosts:
        raise ValueError(f"no broker address in {broker!r}")
    return ",".join(hosts)
