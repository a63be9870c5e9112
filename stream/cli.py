"""``snoopwatch``: the one command line entry point (SPEC §4)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from detectors.settings import Settings, describe
from stream.progress import Progress


def _cmd_worker(args: argparse.Namespace) -> int:
    from stream.app import run_worker

    # faust parses sys.argv itself; give it only what it understands.
    sys.argv = [sys.argv[0], "worker"]
    run_worker(Settings.from_env())
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from stream.replay import replay

    summary = replay(args.events, args.alerts, scores_path=args.scores, dlq_path=args.dlq,
                     context_path=args.context, settings=Settings.from_env(),
                     progress=Progress.for_stderr("replay"), fmt=args.format,
                     ocsf_path=args.ocsf, shards=args.shards)
    print(summary.describe(), file=sys.stderr)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from stream.pipeline import encode
    from stream.simulate import SimConfig, produce, write_context, write_jsonl

    scenarios = None
    if args.scenarios:
        scenarios = {}
        for part in args.scenarios.split(","):
            label, _, count = part.partition("=")
            scenarios[label.strip()] = int(count or 1)
    days = args.days
    if args.family:
        from stream.family import draw, record

        if args.agents or args.insiders is not None or scenarios or args.start:
            print("snoopwatch simulate: --family draws the company; only --seed, --employees "
                  "and --days combine with it", file=sys.stderr)
            return 2
        cfg, params = draw(args.family, args.seed, employees=args.employees, days=args.days)
        drawn = encode(record(cfg, params))
        if args.describe:
            print(drawn.decode())
            return 0
        if args.out and args.out != "-":
            with open(args.out + ".family.json", "wb") as fh:  # beside the events
                fh.write(drawn + b"\n")
        else:
            print(drawn.decode(), file=sys.stderr)
    else:
        if days is None:  # not `or`: --days 0 is an error, not the default
            days = 5 if args.agents and not args.employees else 28
        cfg = SimConfig(seed=args.seed, employees=args.employees, agents=args.agents,
                        days=days, start=args.start or "2026-11-02", insiders=args.insiders,
                        scenarios=scenarios)
        if args.describe:
            from stream.simulate import describe

            print(encode(describe(cfg)).decode())
            return 0
    tty = sys.stderr.isatty()
    if args.kafka:
        from aiokafka.errors import KafkaError

        s = Settings.from_env()
        topic = args.topic or s.input_topic
        if args.context:
            write_context(cfg, args.context)
        preflight(s)  # after the context file: it is written even when Kafka is away
        try:
            # The company's watchlists go to the context topic first, as a company's
            # systems would publish them, so a worker knows them from the first event.
            counts = asyncio.run(produce(cfg, s, topic, context_topic=s.context_topic,
                                         progress=tty))
        except KafkaError as err:
            print(f"snoopwatch simulate: Kafka at {s.broker}: {err!r}", file=sys.stderr)
            return 1
        if args.labels:
            with open(args.labels, "wb") as fh:
                for event_id, label in counts["labels"].items():
                    fh.write(encode({"event_id": event_id, "label": label}) + b"\n")
        where = f"topic {topic}" + (f" ({counts['context']} context entries to "
                                     f"{s.context_topic})" if counts["context"] else "")
    else:
        if not args.out:
            print("snoopwatch simulate: give --out EVENTS.jsonl or --kafka", file=sys.stderr)
            return 2
        counts = write_jsonl(cfg, args.out, args.labels, args.context, progress=tty)
        where = args.out
    print(f"simulated {counts['events']} events of {counts['actors']} actors "
          f"({counts['malicious']} malicious) to {where}", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from stream.evaluate import evaluate

    result = evaluate(args.events, args.labels, context_path=args.context,
                      settings=Settings.from_env(), progress=Progress.for_stderr("evaluate"),
                      baseline=not args.no_baseline, shards=args.shards)
    print(result.table())
    if args.json:
        from stream.pipeline import encode

        with open(args.json, "wb") as fh:
            fh.write(encode(result.to_dict()) + b"\n")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from stream.demo import run_demo

    return run_demo(agents=args.agents, days=args.days, seed=args.seed,
                    timeout_s=args.timeout)


def _cmd_settings(args: argparse.Namespace) -> int:
    current = Settings.from_env()
    for env, default, doc in describe():
        name = env.removeprefix("SNOOPWATCH_").lower()
        print(f"{env}={getattr(current, name)!r}  (default {default})\n    {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snoopwatch", description=(
        "Real-time detection of insiders who misuse customer data. Configuration comes from "
        "SNOOPWATCH_* environment variables (see 'snoopwatch settings')."))
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("worker", help="run a Kafka worker (faust); run more to scale out")

    r = sub.add_parser("replay", help="run the detectors over a JSONL file, no Kafka")
    r.add_argument("events", help="events JSONL file (SPEC §1), processed in file order")
    r.add_argument("--alerts", required=True, help="write alerts JSONL here (SPEC §2)")
    r.add_argument("--scores", help="write {event_id, score} per valid event here")
    r.add_argument("--dlq", help="write dead-letter records (reason, line, bytes) here")
    r.add_argument("--context", help="context JSONL (watchlists), applied from the start")
    r.add_argument("--format", default="spec", metavar="FORMAT",
                   help="the events file's format: spec (default), cloudtrail, ocsf or "
                        "mapping:FILE (docs/sources.md)")
    r.add_argument("--ocsf", metavar="FILE",
                   help="also write each alert as an OCSF 1.7.0 Detection Finding here")
    r.add_argument("--shards", type=int, default=1, metavar="N",
                   help="run N engines on actor-disjoint shards sharing peer statistics on "
                        "the hourly schedule, as N workers would (the same output as one)")

    s = sub.add_parser("simulate", help="a synthetic company with labelled insiders")
    s.add_argument("--out", help="events JSONL to write")
    s.add_argument("--labels", help="labels JSONL to write (malicious events only)")
    s.add_argument("--context", help="context JSONL to write (VIPs, departing staff)")
    s.add_argument("--kafka", action="store_true",
                   help="send events to the input topic, and the context to the context topic")
    s.add_argument("--topic", help="topic for --kafka (default: SNOOPWATCH_INPUT_TOPIC)")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--employees", type=int,
                   help="size of the realistic company (default 500, every role and scenario)")
    s.add_argument("--agents", type=int,
                   help="support agents; alone, the small demo company instead")
    s.add_argument("--days", type=int, help="days to simulate (default 28; 5 for --agents)")
    s.add_argument("--family", choices=("tuning", "heldout"),
                   help="draw the company itself from this family for --seed "
                        "(docs/detection.md Families); the drawn parameters go to "
                        "OUT.family.json")
    s.add_argument("--describe", action="store_true",
                   help="print the company's drawn parameters (or plan) as JSON and exit")
    s.add_argument("--start",
                   help="first day, YYYY-MM-DD (default 2026-11-02, a Monday)")
    s.add_argument("--scenarios",
                   help="insider scenarios as label=N,... (default: a mix of all of them)")
    s.add_argument("--insiders", type=int, help="shorthand for --scenarios bulk_no_ticket=N")

    e = sub.add_parser("evaluate", help="detection quality on labelled events")
    e.add_argument("events")
    e.add_argument("--labels", required=True)
    e.add_argument("--context")
    e.add_argument("--no-baseline", action="store_true",
                   help="skip the river HalfSpaceTrees baseline")
    e.add_argument("--json", help="also write the figures as JSON here")
    e.add_argument("--shards", type=int, default=1, metavar="N",
                   help="snoopwatch on N actor-disjoint engines (see replay --shards)")

    d = sub.add_parser("demo", help="the end-to-end demo on a running local broker")
    d.add_argument("--agents", type=int, default=40)
    d.add_argument("--days", type=int, default=5)
    d.add_argument("--seed", type=int, default=11)
    d.add_argument("--timeout", type=float, default=240.0, help="give up after this many s")

    sub.add_parser("settings", help="list every SNOOPWATCH_* variable with its meaning")
    _add_delivery_commands(sub)
    _add_reliability_commands(sub)
    return p


COMMANDS = {"worker": _cmd_worker, "replay": _cmd_replay, "simulate": _cmd_simulate,
            "evaluate": _cmd_evaluate, "demo": _cmd_demo, "settings": _cmd_settings}


# --- Delivery and deployment (issue 5): alerts, forward-alertmanager, create-topics --------


def _cmd_alerts(args: argparse.Namespace) -> int:
    from stream.delivery import follow_alerts, run

    return run(lambda: follow_alerts(
        Settings.from_env(), sys.stdout, as_json=args.json, from_beginning=args.from_beginning,
        max_alerts=args.max, timeout_s=args.timeout))


def _cmd_forward_alertmanager(args: argparse.Namespace) -> int:
    from stream.delivery import forward_to_alertmanager, run

    settings = Settings.from_env()
    url = args.url or settings.alertmanager_url
    if not url:
        print("snoopwatch forward-alertmanager: give --url or set SNOOPWATCH_ALERTMANAGER_URL",
              file=sys.stderr)
        return 2
    return run(lambda: forward_to_alertmanager(
        settings, url, sys.stdout, group_id=args.group,
        from_beginning=args.from_beginning, resolve_after_s=args.resolve_after,
        generator_url=args.generator_url, max_alerts=args.max, timeout_s=args.timeout))


def _cmd_create_topics(args: argparse.Namespace) -> int:
    from stream.delivery import run
    from stream.topics import create_topics

    return run(lambda: create_topics(Settings.from_env(), args.partitions,
                                     args.replication_factor), ok=0)


def _add_delivery_commands(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("create-topics", help="create the input, alerts, dead-letter and context "
                                             "topics (idempotent); run before the first worker")
    t.add_argument("--partitions", type=int, metavar="N",
                   help="partitions of the input, alerts and dead-letter topics "
                        "(default: SNOOPWATCH_PARTITIONS)")
    t.add_argument("--replication-factor", type=int, default=1, metavar="R")

    a = sub.add_parser("alerts", help="follow the alerts topic: one readable line per alert")
    a.add_argument("--json", action="store_true", help="print each alert as one JSON line")
    a.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest alert still on the topic (default: new ones)")
    a.add_argument("--max", type=int, metavar="N", help="exit after N alerts")
    a.add_argument("--timeout", type=float, metavar="S",
                   help="exit after S seconds (exit code 1 if --max alerts did not arrive)")

    f = sub.add_parser("forward-alertmanager",
                       help="post alerts to Prometheus Alertmanager (API v2), once per alert_id")
    f.add_argument("--url",
                   help="Alertmanager base URL, e.g. http://127.0.0.1:9093 "
                        "(default: SNOOPWATCH_ALERTMANAGER_URL)")
    f.add_argument("--group", help="consumer group (default: <SNOOPWATCH_APP_ID>-alertmanager-"
                                   "forwarder); its committed offsets say what was forwarded")
    f.add_argument("--from-beginning", action="store_true",
                   help="when the group has no offsets yet, start at the oldest alert "
                        "(default: only alerts raised from now on)")
    f.add_argument("--resolve-after", type=float, default=86400.0, metavar="S",
                   help="endsAt = emitted_at + S seconds (default: one day)")
    f.add_argument("--generator-url", help="link shown in Alertmanager (e.g. your SOC console)")
    f.add_argument("--max", type=int, metavar="N", help="exit after reading N alerts")
    f.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")


COMMANDS.update({"alerts": _cmd_alerts, "forward-alertmanager": _cmd_forward_alertmanager,
                 "create-topics": _cmd_create_topics})
# --- end delivery and deployment -----------------------------------------------------------


# --- Reliability (issue 4): audit ------------------------------------------------------------


def _cmd_audit(args: argparse.Namespace) -> int:
    from stream.audit import print_audit, run_audit

    audit = asyncio.run(run_audit(Settings.from_env(), args.metrics))
    print_audit(audit, as_json=args.json)
    return 0 if audit.ok else 1


def _add_reliability_commands(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="per partition: consumed, forwarded, dead-lettered and "
                                     "committed offsets; exit 1 if an input event is unaccounted")
    a.add_argument("--metrics", action="append", metavar="URL",
                   help="also show a worker's counters (its /metrics URL; repeatable)")
    a.add_argument("--json", action="store_true", help="print the audit as one JSON object")


COMMANDS.update({"audit": _cmd_audit})
# --- end reliability ---------------------------------------------------------------------------


# Commands that talk to Kafka: each first makes one connection with the configured security
# (stream/kafka_security.py), so that a refusal is one line within seconds, not an endless
# retry loop of the Kafka client. (The worker checks in run_worker, the demo in run_demo,
# simulate --kafka in _cmd_simulate.)
KAFKA_COMMANDS = {"alerts", "forward-alertmanager", "create-topics", "audit"}


def preflight(settings: Settings | None = None) -> None:
    """Connect once with the settings' security; raises a one-line ValueError if refused."""
    from stream.kafka_security import check_connection

    asyncio.run(check_connection(settings or Settings.from_env()))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in KAFKA_COMMANDS:
            preflight()
        return COMMANDS[args.command](args)
    except (OSError, ValueError) as err:
        print(f"snoopwatch {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
