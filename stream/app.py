"""The faust app: topics, two thin agents, the context follower and ``/metrics``.

``ingest`` reads the input topic, validates each message (dead-lettering bad
ones with their reason and origin) and re-keys valid events by actor onto an
internal topic; ``detect`` reads that topic, so each actor's events reach the
one worker that holds that actor's state, and calls the detection core.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.types import TopicT

from detectors.events import InvalidEvent, decode_event, decode_json, parse_context
from detectors.settings import Settings, bootstrap_servers
from stream.audit import SOURCE_HEADER
from stream.metrics import CONTENT_TYPE, Metrics
from stream.pipeline import Pipeline, Rejected, dead_letter, encode
from stream.state import ActorStore


def source_header(msg: Any) -> bytes:
    """``topic:partition:offset`` of an input message (a by-actor message's origin)."""
    return f"{msg.topic}:{msg.partition}:{msg.offset}".encode()

def input_source(msg: Any, input_topic: str) -> tuple[int, int] | None:
    """(input partition, input offset) from a by-actor message's source header."""
    for name, value in msg.headers or ():
        if name == SOURCE_HEADER:
            topic, part, off = value.decode().rsplit(":", 2)
            return (int(part), int(off)) if topic == input_topic else None
    return None


log = logging.getLogger("snoopwatch")


@dataclass
class Snoopwatch:
    """The faust app and the handles tests and the CLI need."""

    app: faust.App
    settings: Settings
    pipeline: Pipeline
    input_topic: TopicT
    by_actor_topic: TopicT
    alerts_topic: TopicT
    dlq_topic: TopicT
    ingest: Any
    detect: Any
    store: ActorStore | None = None


def _raw_topic(app: faust.App, name: str, **kwargs: Any) -> TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", **kwargs)


def create_app(settings: Settings | None = None, metrics: Metrics | None = None) -> Snoopwatch:
    """Build the worker's faust app from one settings object."""
    s = settings or Settings.from_env()
    pipeline = Pipeline(s, metrics)
    app = faust.App(
        s.app_id,
        broker=s.broker,
        datadir=s.data_dir,
        store="memory://",
        autodiscover=False,
        topic_partitions=s.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.session_timeout_s,
        # detect's acks come from checkpoints (stream/state.py), not from the stream: do not
        # wait for them at shutdown (the closing checkpoint writes the state and acks).
        stream_wait_empty=False,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
        web_bind=s.web_host,
        web_host=s.web_host,
        web_port=s.web_port,
    )
    input_topic = _raw_topic(app, s.input_topic)
    by_actor = _raw_topic(app, f"{s.app_id}-events-by-actor", partitions=s.partitions,
                          internal=True)
    alerts_topic = _raw_topic(app, s.alerts_topic)
    dlq_topic = _raw_topic(app, s.dlq_topic)

    @app.agent(input_topic, name="ingest")
    async def ingest(stream: Any) -> Any:
        async for event in stream.events():
            msg = event.message
            source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
            out = pipeline.ingest(event.value, source, key=msg.key)
            if isinstance(out, Rejected):
                await dlq_topic.send(key=msg.key, value=encode(out.record))
                yield out.reason
            else:
                # The origin rides along in a header, for ``snoopwatch audit``.
                await by_actor.send(key=out.actor.encode(), value=orjson.dumps(out.to_dict()),
                                    headers=[(SOURCE_HEADER, source_header(msg))])
                yield "valid"

    store = ActorStore(s, pipeline.engine, pipeline.metrics)

    @app.agent(by_actor, name="detect")
    async def detect(stream: Any) -> Any:
        # Manual acks: a message is acked (its offset committable) only once a checkpoint
        # holds its effect on the actor's state (stream/state.py).
        async for event in stream.noack().events():
            started = time.perf_counter()
            msg = event.message
            if msg.partition not in store.loaded and not await store.ensure_loaded(
                    msg.partition):
                yield None  # revoked while its state was read: the new owner processes it
                continue
            store.unacked.append(event)
            try:
                ev = decode_event(event.value)
            except InvalidEvent as err:  # only if something else wrote to our internal topic
                pipeline.metrics.dead_lettered.labels(reason=err.reason).inc()
                source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
                await dlq_topic.send(key=msg.key, value=encode(
                    dead_letter(event.value, err, source, msg.key)))
                yield None
                continue
            if store.admit(ev.actor, ev.event_id, msg.partition, msg.offset,
                           input_source(msg, s.input_topic)) != "process":
                yield None
                continue
            _, alert = pipeline.detect(ev, started)
            if alert is not None:
                await alerts_topic.send(key=ev.actor.encode(), value=encode(alert))
            yield alert

    @app.timer(interval=s.checkpoint_interval_s, name="snoopwatch.checkpoint")
    async def checkpoint_state() -> None:
        try:
            await store.checkpoint()
        except Exception:  # broker away: the events stay unacked and are retried next time
            log.warning("snoopwatch: checkpoint failed; retrying", exc_info=True)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        mine = {tp.partition for tp in revoked if tp.topic == by_actor.get_topic_name()}
        if mine:
            await store.revoke(mine)

    @app.service
    class StateCloser(faust.Service):
        async def on_stop(self) -> None:
            try:
                await store.checkpoint()
            finally:
                await store.stop()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(pipeline.metrics.exposition(), content_type=CONTENT_TYPE)

    @app.task
    async def follow_context() -> None:
        await _follow_context(s, pipeline, dlq_topic)

    # --- Consumer lag per partition (issue 5): snoopwatch_consumer_lag_messages ---------------
    from stream.lag import LAG_INTERVAL_S, export_lag

    lag_topics = {s.input_topic, by_actor.get_topic_name()}

    @app.timer(interval=LAG_INTERVAL_S, name="snoopwatch.consumer_lag")
    async def export_consumer_lag() -> None:
        await export_lag(app, pipeline.metrics, lag_topics)
    # --- end consumer lag ---------------------------------------------------------------------

    return Snoopwatch(app, s, pipeline, input_topic, by_actor, alerts_topic, dlq_topic,
                      ingest, detect, store)


async def _follow_context(s: Settings, pipeline: Pipeline, dlq_topic: TopicT) -> None:
    """Read the whole compacted context topic, in every worker, from the beginning.

    Every worker needs every watchlist entry (a VIP customer can be read by any
    actor), so this is a group-less consumer of all partitions, not an agent.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    servers = bootstrap_servers(s.broker)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(s.context_topic, 1, 1,
                                                topic_configs={"cleanup.policy": "compact"})])
        (described,) = await admin.describe_topics([s.context_topic])
        parts = sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(s.context_topic, p) for p in parts])
        async for msg in consumer:
            key = None if msg.key is None else msg.key.decode("utf-8", "replace")
            try:
                obj = None if not msg.value else decode_json(msg.value)
                entry = parse_context(obj, key)
            except InvalidEvent as err:
                pipeline.metrics.dead_lettered.labels(reason=err.reason).inc()
                source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
                await dlq_topic.send(key=msg.key, value=encode(
                    dead_letter(msg.value or b"", err, source, msg.key)))
                continue
            if entry is not None:
                pipeline.engine.apply_context(entry)
                pipeline.metrics.context_entries.inc()
    finally:
        await consumer.stop()


def run_worker(settings: Settings | None = None) -> None:
    """``snoopwatch worker``: run one faust worker until interrupted."""
    from faust.worker import Worker

    sw = create_app(settings)
    worker = Worker(sw.app, loglevel=sw.settings.log_level)
    worker.execute_from_commandline()
