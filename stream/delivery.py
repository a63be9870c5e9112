"""Downstream delivery of alerts: ``snoopwatch alerts`` and ``snoopwatch forward-alertmanager``.

``snoopwatch alerts`` follows the alerts topic (SPEC §2) and prints one readable line per
alert (or the alert's JSON with ``--json``). It reads without a consumer group, so it never
moves anyone's offsets, and starts at the end of the topic unless ``--from-beginning`` (or
unless the topic does not exist yet: then everything in it will be new).

``snoopwatch forward-alertmanager`` posts each alert to Prometheus Alertmanager's API v2
(``POST /api/v2/alerts``), de-duplicated by ``alert_id``, as an alert named
``SnoopwatchInsider``:

- labels (identity and routing): ``alertname``, ``severity``, ``actor``, ``alert_id``, the
  top ``detector`` and, if known, the actor's ``role``. These are Alertmanager labels, not
  Prometheus series: one alert per snoopwatch alert is what Alertmanager is for, and the
  actor is what a SOC routes, groups and silences on. Nothing is sent that is not on the
  alerts topic already (an alert carries the number of customers, not their ids).
- annotations (what a human reads): ``summary``, ``description`` (every reason with the
  observed value and the normal), ``score``, ``time``, ``emitted_at``, ``customers``,
  ``event_ids`` (the first ten).
- ``startsAt`` is the alert's ``emitted_at``; ``endsAt`` is ``resolve_after`` seconds later,
  so an insider alert stays firing for a day by default and then resolves by itself.

De-duplication: an ``alert_id`` already forwarded is not posted again. The forwarder keeps
the ids it posted (bounded), loads the ids Alertmanager already holds when it starts, and
reads in a consumer group that commits only after Alertmanager accepted a batch. (Were an
alert posted twice anyway, ``alert_id`` is a label, so Alertmanager would still hold one.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import orjson

from detectors.settings import Settings
from stream.kafka_security import client_kwargs
from stream.shared import alert_line

ALERTNAME = "SnoopwatchInsider"
MAX_EVENT_IDS = 10


# --- snoopwatch alerts -------------------------------------------------------------------


async def follow_alerts(settings: Settings, out: IO[str], *, as_json: bool = False,
                        from_beginning: bool = False, max_alerts: int | None = None,
                        timeout_s: float | None = None, err: IO[str] | None = None) -> int:
    """Print alerts from the alerts topic until interrupted, ``max_alerts`` or ``timeout_s``.

    Returns the exit code: 0, or 1 when ``timeout_s`` ran out before ``max_alerts`` alerts.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    err = err or sys.stderr
    topic = settings.alerts_topic
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    stop = _stop_on_signals()
    consumer = AIOKafkaConsumer(**client_kwargs(settings),
                                group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    shown = 0
    try:
        await consumer.start()  # inside try: a failed bootstrap must still close it
        parts = await _partitions(consumer, topic)
        created_later = parts is None  # then every alert in it is new
        while parts is None:
            if _done(stop, deadline):
                return 1 if max_alerts else 0
            await asyncio.sleep(0.5)
            parts = await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_beginning or created_later:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the start now, so "following" means following from here
            await consumer.position(tp)
        print(f"following {topic} on {settings.broker}"
              f"{' from the beginning' if from_beginning else ''} (Ctrl-C to stop)",
              file=err, flush=True)
        while not _done(stop, deadline):
            batch = await consumer.getmany(timeout_ms=500)
            for tp in sorted(batch):
                for msg in batch[tp]:
                    try:
                        alert = orjson.loads(msg.value)
                        line = (orjson.dumps(alert).decode() if as_json
                                else alert_line(alert))
                    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as e:
                        print(f"skipped a malformed alert at {tp.topic}[{tp.partition}]@"
                              f"{msg.offset}: {e!r}", file=err, flush=True)
                        continue
                    out.write(line + "\n")
                    out.flush()
                    shown += 1
                    if max_alerts is not None and shown >= max_alerts:
                        return 0
        return 1 if max_alerts and shown < max_alerts else 0
    finally:
        await consumer.stop()


# --- Alertmanager --------------------------------------------------------------------------


def to_alertmanager(alert: dict[str, Any], resolve_after_s: float = 86400.0,
                    generator_url: str | None = None) -> dict[str, Any]:
    """One SPEC §2 alert as an Alertmanager API v2 ``postableAlert``.

    >>> a = {"alert_id": "ab12", "actor": "agent-7", "role": "support_agent",
    ...      "time": "2026-11-05T13:27:12.180Z", "emitted_at": "2026-11-28T10:00:00.000Z",
    ...      "severity": "critical", "score": 95.4, "summary": "agent-7 did things.",
    ...      "reasons": [{"detector": "unjustified", "score": 0.9, "description": "no ticket",
    ...                   "observed": 17, "expected": 0.1}],
    ...      "event_ids": ["e1", "e2"], "customers": 17}
    >>> am = to_alertmanager(a)
    >>> am["labels"]
    {'alertname': 'SnoopwatchInsider', 'severity': 'critical', 'actor': 'agent-7', \
'alert_id': 'ab12', 'detector': 'unjustified', 'role': 'support_agent'}
    >>> am["startsAt"], am["endsAt"]
    ('2026-11-28T10:00:00.000Z', '2026-11-29T10:00:00.000Z')
    >>> am["annotations"]["description"]
    '- unjustified (0.90): no ticket; observed 17, expected 0.1'
    """
    reasons = alert.get("reasons") or []
    labels = {
        "alertname": ALERTNAME,
        "severity": str(alert["severity"]),
        "actor": str(alert["actor"]),
        "alert_id": str(alert["alert_id"]),
        "detector": str(reasons[0]["detector"]) if reasons else "none",
    }
    if alert.get("role"):
        labels["role"] = str(alert["role"])
    description = "\n".join(
        f"- {r.get('detector')} ({float(r.get('score', 0)):.2f}): {r.get('description')}; "
        f"observed {_short(r.get('observed'))}, expected {_short(r.get('expected'))}"
        for r in reasons)
    event_ids = list(alert.get("event_ids") or [])
    annotations = {
        "summary": str(alert.get("summary", "")),
        "description": description,
        "score": f"{float(alert.get('score', 0)):.1f}",
        "time": str(alert.get("time", "")),
        "emitted_at": str(alert.get("emitted_at", "")),
        "customers": str(alert.get("customers", "")),
        "event_ids": " ".join(event_ids[:MAX_EVENT_IDS])
                     + (f" (+{len(event_ids) - MAX_EVENT_IDS} more)"
                        if len(event_ids) > MAX_EVENT_IDS else ""),
    }
    starts = _parse_time(alert.get("emitted_at")) or datetime.now(UTC)
    out: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": _rfc3339(starts),
        "endsAt": _rfc3339(starts + timedelta(seconds=resolve_after_s)),
    }
    if generator_url:
        out["generatorURL"] = generator_url
    return out


class SeenIds:
    """A bounded, insertion-ordered set of alert ids (the oldest are forgotten first).

    >>> s = SeenIds(capacity=2)
    >>> s.add("a"); s.add("b"); s.add("c")
    >>> "a" in s, "b" in s, "c" in s
    (False, True, True)
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, alert_id: str) -> None:
        self._ids[alert_id] = None
        self._ids.move_to_end(alert_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class AlertmanagerError(Exception):
    """Alertmanager refused a post (4xx): retrying the same payload will not help."""


async def forward_to_alertmanager(settings: Settings, url: str, out: IO[str], *,
                                  group_id: str | None = None, from_beginning: bool = False,
                                  resolve_after_s: float = 86400.0,
                                  generator_url: str | None = None,
                                  max_alerts: int | None = None,
                                  timeout_s: float | None = None,
                                  err: IO[str] | None = None) -> int:
    """Forward alerts from the alerts topic to Alertmanager until stopped.

    Prints ``forwarded <alert_id> ...`` or ``duplicate <alert_id> ...`` per alert read.
    ``max_alerts`` counts alerts read (forwarded or not); ``timeout_s`` bounds the run.
    """
    import aiohttp
    from aiokafka import AIOKafkaConsumer

    err = err or sys.stderr
    base = url.rstrip("/")
    group = group_id or f"{settings.app_id}-alertmanager-forwarder"
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    stop = _stop_on_signals()
    seen = SeenIds()
    read = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        for alert_id in await _held_alert_ids(http, base, err):
            seen.add(alert_id)
        consumer = AIOKafkaConsumer(settings.alerts_topic,
                                    **client_kwargs(settings),
                                    group_id=group, enable_auto_commit=False,
                                    auto_offset_reset="earliest" if from_beginning else "latest")
        try:
            await consumer.start()
            print(f"forwarding {settings.alerts_topic} to {base}/api/v2/alerts "
                  f"(group {group}; {len(seen)} alert id(s) already in Alertmanager)",
                  file=err, flush=True)
            while not _done(stop, deadline):
                batch = await consumer.getmany(timeout_ms=500)
                msgs = [m for tp in sorted(batch) for m in batch[tp]]
                if not msgs:
                    continue
                fresh: list[tuple[dict[str, Any], dict[str, Any]]] = []
                order: list[tuple[str, str]] = []  # (alert_id, "new" | "duplicate")
                in_batch: set[str] = set()
                for msg in msgs:
                    read += 1
                    try:
                        alert = orjson.loads(msg.value)
                        posted = to_alertmanager(alert, resolve_after_s, generator_url)
                    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as e:
                        print(f"skipped a malformed alert at {msg.topic}[{msg.partition}]@"
                              f"{msg.offset}: {e!r}", file=err, flush=True)
                        continue
                    alert_id = posted["labels"]["alert_id"]
                    if alert_id in seen or alert_id in in_batch:
                        order.append((alert_id, "duplicate"))
                    else:
                        order.append((alert_id, "new"))
                        in_batch.add(alert_id)
                        fresh.append((posted, alert))
                if fresh and not await _post_with_retry(http, base, fresh, stop, deadline,
                                                        err):
                    break  # stopped while Alertmanager was unreachable: do not commit
                accepted = {p["labels"]["alert_id"]: a for p, a in fresh}
                for alert_id, kind in order:
                    if kind == "duplicate":
                        out.write(f"duplicate {alert_id} (already forwarded)\n")
                    elif alert_id in accepted:
                        seen.add(alert_id)
                        alert = accepted[alert_id]
                        out.write(f"forwarded {alert_id} [{alert['severity']}] "
                                  f"{alert['actor']}\n")
                out.flush()
                await consumer.commit()
                if max_alerts is not None and read >= max_alerts:
                    break
        finally:
            await consumer.stop()
    return 0


async def _post_with_retry(http: Any, base: str,
                           fresh: list[tuple[dict[str, Any], dict[str, Any]]],
                           stop: asyncio.Event, deadline: float | None, err: IO[str]) -> bool:
    """Post until Alertmanager takes it; False if stopped first. A refused (4xx) batch is
    retried alert by alert, and an alert Alertmanager refuses on its own is reported and
    dropped (it would block every later alert)."""
    delay = 1.0
    while True:
        try:
            await _post(http, base, [p for p, _ in fresh])
            return True
        except AlertmanagerError as e:
            print(f"Alertmanager refused the batch ({e}); posting its alerts one by one",
                  file=err, flush=True)
            kept = []
            for posted, alert in fresh:
                try:
                    await _post(http, base, [posted])
                    kept.append((posted, alert))
                except AlertmanagerError as e1:
                    print(f"Alertmanager refused alert {posted['labels']['alert_id']}, "
                          f"dropped: {e1}", file=err, flush=True)
            fresh[:] = kept
            return True
        except Exception as e:  # connection refused, timeout, 5xx: wait and retry
            print(f"Alertmanager at {base} unavailable ({e!r}); retrying in {delay:.0f}s",
                  file=err, flush=True)
            end = time.monotonic() + delay
            while time.monotonic() < end:
                if _done(stop, deadline):
                    return False
                await asyncio.sleep(0.1)
            delay = min(delay * 2, 30.0)


async def _post(http: Any, base: str, alerts: list[dict[str, Any]]) -> None:
    async with http.post(f"{base}/api/v2/alerts", data=orjson.dumps(alerts),
                         headers={"Content-Type": "application/json"}) as resp:
        if resp.status < 300:
            return
        body = (await resp.text())[:300]
        if 400 <= resp.status < 500:
            raise AlertmanagerError(f"HTTP {resp.status}: {body}")
        raise RuntimeError(f"HTTP {resp.status}: {body}")


async def _held_alert_ids(http: Any, base: str, err: IO[str]) -> list[str]:
    """alert_ids of the SnoopwatchInsider alerts Alertmanager holds (any state)."""
    try:
        async with http.get(f"{base}/api/v2/alerts",
                            params={"filter": f'alertname="{ALERTNAME}"'}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            held = await resp.json()
    except Exception as e:
        print(f"could not list Alertmanager's alerts ({e!r}); starting with none known",
              file=err, flush=True)
        return []
    return [a["labels"]["alert_id"] for a in held if "alert_id" in a.get("labels", {})]


# --- helpers -------------------------------------------------------------------------------


async def _partitions(consumer: Any, topic: str) -> set[int] | None:
    """The topic's partitions, or None while it does not exist yet."""
    # What consumer.topics() does, keeping the partitions it drops (aiokafka < 0.15).
    cluster = await consumer._client.fetch_all_metadata()
    parts = cluster.partitions_for_topic(topic)
    return set(parts) if parts else None


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or Ctrl-C: the command ends its poll and closes its consumer.
    (Left to asyncio.run, Ctrl-C cancels the poll mid-fetch; in the full suite `alerts`
    then twice failed to exit within 30 s.) A second Ctrl-C interrupts at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # (the next one: KeyboardInterrupt)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, interrupted)
    return stop


def _done(stop: asyncio.Event, deadline: float | None) -> bool:
    return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items()) or "{}"
    return str(value)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run(coro_fn: Callable[[], Any], ok: int | None = None) -> int:
    """Run a command's coroutine: its result is the exit code (``ok`` if given); Ctrl-C ends
    it cleanly with 0, and Kafka being unreachable is one line on stderr and 1."""
    from aiokafka.errors import KafkaError

    try:
        result = asyncio.run(coro_fn())
    except KeyboardInterrupt:
        return 0
    except KafkaError as e:
        print(f"snoopwatch: Kafka error: {e!r}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        return 0
    return result if ok is None else ok
