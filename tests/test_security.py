"""Security (issue 17) on a real secured broker: SASL_SSL/SCRAM end to end, refusals in one
line, no secret anywhere, the web server's guard, redacted dead letters.

The module starts a private broker of its own (``kafka.sh up --secured`` on a temp state dir
and free ports, like tests/test_faults.py), with a throw-away CA, SCRAM users and the
client files, so the suite's plain broker is left alone; it is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.settings import Settings
from stream.demo import free_port, scrape
from stream.kafka_security import client_kwargs
from stream.processes import log_tail, stop_process
from stream.simulate import SimConfig, generate
from tests.procs import REPO, borrow_kafka_jars, wait_until, worker

pytestmark = pytest.mark.kafka

SIM = SimConfig(seed=7, agents=8, days=3, insiders=1)
SCRIPT_ACTOR = "<script>alert('pwned')</script>"
PII = "jane.doe@example.com"  # in a malformed event: must not reach a redacted dead letter
REFUSAL_LIMIT_S = 30.0


@dataclass
class SecuredBroker:
    state: Path
    env: dict[str, str]
    plaintext: int
    sasl_ssl: int
    ssl: int
    sasl_plaintext: int

    @property
    def client(self) -> Path:
        return self.state / "kafka" / "secured" / "client"

    def kafka_sh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(REPO / "deploy/kafka/kafka.sh"), *args],
                              env=self.env, capture_output=True, text=True, timeout=300)

    def settings(self, run: str, **overrides: Any) -> Settings:
        """SASL_SSL with SCRAM-SHA-512 on topics of their own (``overrides`` change it)."""
        c = self.client
        base = Settings(
            broker=f"kafka://127.0.0.1:{self.sasl_ssl}", input_topic=f"s-{run}-events",
            alerts_topic=f"s-{run}-alerts", dlq_topic=f"s-{run}-dlq",
            context_topic=f"s-{run}-context", app_id=f"snoopwatch-sec-{run}",
            web_port=free_port(), security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512", sasl_username="snoopwatch",
            sasl_password_file=str(c / "password"), ssl_cafile=str(c / "ca.pem"))
        return base.replace(**overrides)


def _ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    state = tmp_path_factory.mktemp("secured-kafka")
    plain, controller, sasl_ssl, tls, sasl_plain = _ports(5)
    env = {**os.environ, "SNOOPWATCH_STATE_DIR": str(state), "KAFKA_PORT": str(plain),
           "KAFKA_CONTROLLER_PORT": str(controller), "KAFKA_SASL_SSL_PORT": str(sasl_ssl),
           "KAFKA_SSL_PORT": str(tls), "KAFKA_SASL_PLAINTEXT_PORT": str(sasl_plain)}
    borrow_kafka_jars(state)
    b = SecuredBroker(state, env, plain, sasl_ssl, tls, sasl_plain)
    try:
        out = b.kafka_sh("up", "--secured")
        assert out.returncode == 0, f"kafka.sh up --secured:\n{out.stdout}{out.stderr}"
        yield b
    finally:
        b.kafka_sh("down")


def snoopwatch(settings: Settings, *args: str, timeout: float = 120,
               **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``snoopwatch ARGS`` with these settings as its environment; (result, seconds)."""
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=REPO,
                         env={**os.environ, **settings.to_env(), **env},
                         capture_output=True, text=True, timeout=timeout)
    return out, time.monotonic() - started


def https_get(url: str, ca: Path, token: str | None = None) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                 if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _script_actor_events() -> list[dict[str, Any]]:
    """The simulated insider's events again, by an actor named like an XSS attempt."""
    pairs = list(generate(SIM))
    insider = next(ev["actor"] for ev, label in pairs if label)
    return [{**ev, "actor": SCRIPT_ACTOR, "event_id": "x-" + ev["event_id"]}
            for ev, _ in pairs if ev["actor"] == insider]


async def _send(settings: Settings, msgs: list[tuple[bytes | None, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=20)
    await producer.start()
    try:
        for key, value in msgs:
            await producer.send(settings.input_topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _read_all(settings: Settings, topic: str, idle_s: float = 3.0) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, **client_kwargs(settings), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    out: list[bytes] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batch:
                return out
            out += [m.value for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def e2e(broker: SecuredBroker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One worker over SASL_SSL/SCRAM-SHA-512 with HTTPS and a token on its web server,
    redacted dead letters; the simulated company (plus an insider named ``<script>``) sent
    over the secured listener; what every output said, for the tests below."""
    tmp = tmp_path_factory.mktemp("secured-e2e")
    token = "t0k3n-" + os.urandom(12).hex()
    (tmp / "web-token").write_text(token + "\n")
    secured = broker.state / "kafka" / "secured"
    # One partition: the worker sees the events in the order replay would (the <script>
    # actor's alert is a low one, which a different interleaving of partitions may not give).
    s = broker.settings("e2e", data_dir=str(tmp / "worker"), partitions=1,
                        web_certfile=str(secured / "broker.pem"),
                        web_keyfile=str(secured / "broker.key"),
                        web_token_file=str(tmp / "web-token"), dlq_payload="redacted",
                        log_level="debug")  # the strictest log for the secret test
    outputs: dict[str, str] = {}
    out, _ = snoopwatch(s, "create-topics", "--partitions", "1")
    assert out.returncode == 0, out.stderr
    outputs["create-topics"] = out.stdout + out.stderr
    out, _ = snoopwatch(s, "simulate", "--kafka", "--seed", str(SIM.seed), "--agents",
                        str(SIM.agents), "--days", str(SIM.days), "--insiders", "1")
    assert out.returncode == 0, out.stderr
    outputs["simulate"] = out.stdout + out.stderr
    bad = orjson.dumps({"event_id": "bad-1", "actor": "mallory", "time": "not a time",
                        "action": "read", "note": PII})
    asyncio.run(_send(s, [(SCRIPT_ACTOR.encode(), orjson.dumps(ev))
                          for ev in _script_actor_events()] + [(b"mallory", bad)]))

    log = tmp / "worker.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], cwd=REPO,
                                env={**os.environ, **s.to_env()}, stdout=fh,
                                stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{s.web_port}"
    ca = broker.client / "ca.pem"
    try:
        deadline = time.monotonic() + 90
        status = 0
        alerts: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"worker exited:\n{log_tail(log)}"
            try:
                status, page = https_get(f"{base}/alerts", ca, token)
            except OSError:
                status, page = 0, ""
            if status == 200 and "pwned" in page:  # escaped or not: the test below says
                break
            time.sleep(1)
        else:
            raise AssertionError(f"no alert for the <script> actor in 90 s (/alerts: {status}):"
                                 f"\n{log_tail(log)}")
        out, _ = snoopwatch(s, "alerts", "--from-beginning", "--json", "--max", "2",
                            "--timeout", "30")
        assert out.returncode == 0, out.stderr
        outputs["alerts"] = out.stdout + out.stderr
        alerts = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        web = {path: https_get(f"{base}{path}", ca, tok) for path, tok in (
            ("/alerts", token), ("/metrics", None), ("/health", None))}
        web["/alerts-no-token"] = https_get(f"{base}/alerts", ca)
        web["/alerts-wrong-token"] = https_get(f"{base}/alerts", ca, "x" * len(token))
        try:  # HTTPS only: a plain HTTP request gets no page
            with urllib.request.urlopen(f"http://127.0.0.1:{s.web_port}/metrics",
                                        timeout=5) as resp:
                plain_http: str | None = f"HTTP {resp.status}"
        except OSError:
            plain_http = None
        dlq = asyncio.run(_read_all(s, s.dlq_topic))
    finally:
        stop_process(proc)
    settings_out, _ = snoopwatch(s, "settings")
    outputs["settings"] = settings_out.stdout + settings_out.stderr
    outputs["worker-log"] = log.read_text(errors="replace")
    return {"settings": s, "alerts": alerts, "web": web, "dlq": dlq, "outputs": outputs,
            "token": token, "password": (broker.client / "password").read_text().strip(),
            "plain_http": plain_http}


def test_the_worker_alerts_end_to_end_over_sasl_ssl_with_scram_sha_512(
        e2e: dict[str, Any]) -> None:
    assert e2e["alerts"], "no alert read back over SASL_SSL"
    assert {"alert_id", "actor", "severity", "score"} <= set(e2e["alerts"][0])
    assert "SASL_SSL, SCRAM-SHA-512 as snoopwatch" in e2e["outputs"]["worker-log"]


def test_no_secret_reaches_logs_settings_metrics_pages_or_alerts(e2e: dict[str, Any]) -> None:
    password, token = e2e["password"], e2e["token"]
    assert len(password) >= 32
    texts = {**e2e["outputs"], **{f"web {p}": body for p, (_, body) in e2e["web"].items()},
             "alerts json": json.dumps(e2e["alerts"]),
             "dlq": b"".join(e2e["dlq"]).decode(errors="replace")}
    for where, text in texts.items():
        assert password not in text, f"the SASL password appears in {where}"
        assert token not in text, f"the web token appears in {where}"
    # The settings output names the files, not their contents.
    assert "SNOOPWATCH_SASL_PASSWORD_FILE=" in e2e["outputs"]["settings"]


def test_web_pages_need_the_token_over_https_and_escape_event_values(
        e2e: dict[str, Any]) -> None:
    web = e2e["web"]
    assert web["/alerts-no-token"][0] == 401
    assert web["/alerts-wrong-token"][0] == 401
    assert web["/metrics"][0] == 200 and "snoopwatch_events_processed_total" in web["/metrics"][1]
    assert web["/health"][0] == 200 and "ok" in web["/health"][1]
    status, page = web["/alerts"]
    assert status == 200
    assert SCRIPT_ACTOR not in page and "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert e2e["plain_http"] is None, "the HTTPS server answered plain HTTP"


def test_a_redacted_dead_letter_keeps_the_field_and_a_keyed_hash_not_the_bytes(
        e2e: dict[str, Any]) -> None:
    records = [orjson.loads(v) for v in e2e["dlq"]]
    (rec,) = [r for r in records if r.get("field") == "time"]
    assert rec["payload"] == "redacted" and rec["value"] is None and rec["value_b64"] is None
    assert rec["value_hmac"].startswith("hmac-sha256:") and rec["reason"] == "bad_time"
    assert rec["key"].startswith("hmac-sha256:")  # the message key named the actor
    raw = b"".join(e2e["dlq"])
    assert PII.encode() not in raw and b"mallory" not in raw and b"not a time" not in raw


def _untrusted_ca(tmp: Path) -> Path:
    ca = tmp / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=not the broker's CA", "-keyout", str(tmp / "other-ca.key"),
                    "-out", str(ca)], check=True, capture_output=True)
    return ca


@pytest.mark.parametrize("command", ["worker", "alerts"])
@pytest.mark.parametrize("case", ["wrong password", "untrusted certificate",
                                  "plaintext client"])
def test_a_refused_connection_is_one_line_within_30s(
        broker: SecuredBroker, tmp_path: Path, case: str, command: str) -> None:
    s = broker.settings("refused", data_dir=str(tmp_path / "worker"))
    expect = {"wrong password": "login refused", "untrusted certificate": "not trusted",
              "plaintext client": "TLS or SASL listener"}[case]
    if case == "wrong password":
        (tmp_path / "pw").write_text("not-the-password\n")
        s = s.replace(sasl_password_file=str(tmp_path / "pw"))
    elif case == "untrusted certificate":
        s = s.replace(ssl_cafile=str(_untrusted_ca(tmp_path)))
    else:
        s = s.replace(security_protocol="PLAINTEXT", sasl_mechanism="", sasl_username="",
                      sasl_password_file="", ssl_cafile="")
    args = [command] + (["--timeout", "60"] if command == "alerts" else [])
    out, took = snoopwatch(s, *args, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0, out.stdout + out.stderr
    assert took < REFUSAL_LIMIT_S, f"{case}: took {took:.1f}s"
    assert len(lines) == 1, f"{case}: not one line:\n{out.stderr}"
    assert expect in lines[0] and f"snoopwatch {command}: Kafka at kafka://127.0.0.1:" in lines[0]
    assert "Traceback" not in out.stderr and "not-the-password" not in out.stderr


@pytest.mark.parametrize("protocol,mechanism", [
    ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_SSL", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SSL", "mTLS")])
def test_each_protocol_and_mechanism_connects(broker: SecuredBroker, tmp_path: Path,
                                              protocol: str, mechanism: str) -> None:
    c = broker.client
    s = broker.settings(f"p{os.getpid()}", data_dir=str(tmp_path), security_protocol=protocol)
    if protocol == "SASL_PLAINTEXT":
        s = s.replace(broker=f"kafka://127.0.0.1:{broker.sasl_plaintext}", ssl_cafile="",
                      sasl_mechanism=mechanism)
    elif protocol == "SSL":
        s = s.replace(broker=f"kafka://127.0.0.1:{broker.ssl}", sasl_mechanism="",
                      sasl_username="", sasl_password_file="",
                      ssl_certfile=str(c / "client.pem"), ssl_keyfile=str(c / "client.key"))
    else:
        s = s.replace(sasl_mechanism=mechanism)
    out, _ = snoopwatch(s, "create-topics", "--partitions", "1")
    assert out.returncode == 0, out.stderr
    assert "context" in out.stderr
    if protocol == "SSL":  # the same listener without the client certificate: refused
        out, took = snoopwatch(s.replace(ssl_certfile="", ssl_keyfile=""), "create-topics")
        assert out.returncode != 0 and took < REFUSAL_LIMIT_S
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "client certificate" in out.stderr


def test_the_worker_runs_over_mutual_tls(broker: SecuredBroker, e2e: dict[str, Any],
                                         tmp_path: Path) -> None:
    """faust's SSL credentials: a worker on the listener that requires a client certificate
    reads everything the end-to-end test sent (a group of its own)."""
    c = broker.client
    s = e2e["settings"].replace(
        broker=f"kafka://127.0.0.1:{broker.ssl}", security_protocol="SSL", sasl_mechanism="",
        sasl_username="", sasl_password_file="", ssl_certfile=str(c / "client.pem"),
        ssl_keyfile=str(c / "client.key"), app_id="snoopwatch-sec-mtls", web_port=free_port(),
        web_certfile="", web_keyfile="", web_token_file="", log_level="info",
        data_dir=str(tmp_path / "worker"))
    valid = sum(1 for _ in generate(SIM)) + len(_script_actor_events())
    with worker(s, tmp_path / "worker.log") as url:
        wait_until("every event processed over mutual TLS", lambda: scrape(url).get(
            "snoopwatch_events_processed_total", 0) >= valid, 90, 1)
    assert f"Kafka at kafka://127.0.0.1:{broker.ssl}, SSL, client certificate" in \
        (tmp_path / "worker.log").read_text()


def test_a_worker_bound_beyond_loopback_without_a_token_refuses_to_start(
        broker: SecuredBroker, tmp_path: Path) -> None:
    s = broker.settings("open", data_dir=str(tmp_path), web_host="0.0.0.0")
    out, took = snoopwatch(s, "worker", timeout=60)
    assert out.returncode != 0 and took < REFUSAL_LIMIT_S
    assert out.stderr.strip() == (
        "snoopwatch worker: SNOOPWATCH_WEB_HOST='0.0.0.0' is not a loopback address: set "
        "SNOOPWATCH_WEB_TOKEN_FILE (or SNOOPWATCH_WEB_ALLOW_OPEN=1 behind an authenticating "
        "proxy)")


def test_a_missing_secret_file_is_one_line_naming_the_setting(broker: SecuredBroker,
                                                              tmp_path: Path) -> None:
    s = broker.settings("missing", data_dir=str(tmp_path),
                        sasl_password_file=str(tmp_path / "nope"))
    out, _ = snoopwatch(s, "audit")
    assert out.returncode == 1
    assert out.stderr.strip() == (f"snoopwatch audit: SNOOPWATCH_SASL_PASSWORD_FILE="
                                  f"{tmp_path / 'nope'}: cannot read (No such file or directory)")


def test_a_broker_that_never_answers_is_one_line_after_the_timeout() -> None:
    import socket

    from stream.kafka_security import KafkaRefused, check_connection

    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        s = Settings(broker=f"kafka://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(KafkaRefused) as err:
            asyncio.run(check_connection(s, timeout_s=2))
    assert time.monotonic() - started < 5
    assert str(err.value) == (f"Kafka at {s.broker} (PLAINTEXT): no answer within 2 s; check "
                              "SNOOPWATCH_BROKER (a firewall?) and SNOOPWATCH_SECURITY_PROTOCOL")
