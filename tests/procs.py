"""Real programs for the integration tests: a snoopwatch worker, Prometheus, Alertmanager.

Each starts on free loopback ports with its own temp config and data, is waited for until
it answers, and is stopped (by its own pid) when the ``with`` block ends. Prometheus and
Alertmanager are Debian's binaries (``make system-deps`` installs them); a test that needs
one fails, rather than skips, when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from detectors.settings import Settings
from stream.demo import free_port, scrape
from stream.processes import stop_process, wait_ready

REPO = Path(__file__).resolve().parent.parent


def need_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run 'make system-deps' (make test does it)")
    return path


def borrow_kafka_jars(state: Path) -> None:
    """Give a broker of its own (state dir ``state``) the jars of the one already set up:
    they come from Maven Central once (deploy/kafka/kafka.sh marks a complete set)."""
    lib = state / "kafka" / "lib"
    lib.parent.mkdir(parents=True, exist_ok=True)
    for root in (os.environ.get("SNOOPWATCH_STATE_DIR"), str(REPO / "state")):
        found = Path(root or "/nonexistent") / "kafka" / "lib"
        if (found / ".snoopwatch-lib-complete").is_file():
            lib.symlink_to(found.resolve(), target_is_directory=True)
            return


def _wait(what: str, ready: Any, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    wait_ready(what, ready, proc, log, timeout_s, error=AssertionError)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def worker(settings: Settings, log: Path) -> Iterator[str]:
    """``snoopwatch worker`` as a subprocess; yields its /metrics URL once it serves it."""
    env = {**os.environ, **settings.to_env()}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    try:
        _wait("worker", lambda: bool(scrape(url)), proc, log, 60)
        yield url
    finally:
        stop_process(proc)


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen

    def query(self, expr: str) -> dict[str, Any]:
        """``/api/v1/query`` at now; the ``data`` part (raises on a PromQL error)."""
        q = urllib.parse.urlencode({"query": expr})
        try:
            body = get_json(f"{self.url}/api/v1/query?{q}")
        except urllib.error.HTTPError as err:
            raise AssertionError(f"query failed ({err.code}): {err.read()[:500]!r}\n{expr}"
                                 ) from None
        assert body["status"] == "success", body
        return body["data"]

    def api(self, path: str) -> Any:
        body = get_json(f"{self.url}/api/v1/{path}")
        assert body["status"] == "success", body
        return body["data"]


@contextlib.contextmanager
def _serve(name: str, args: list[str], workdir: Path, port: int
           ) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run a Debian-packaged server on ``port``; yield its base URL once ``/-/ready`` answers."""
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([need_binary(name), *args], stdout=out,
                                stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(name, lambda: http_ok(f"{url}/-/ready"), proc, log, 30)
        yield url, proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def prometheus(config: dict[str, Any], workdir: Path) -> Iterator[Prometheus]:
    """Debian's ``prometheus`` with ``config`` (a dict, written as YAML-compatible JSON)."""
    port = free_port()
    cfg = workdir / "prometheus.yml"
    cfg.write_text(json.dumps(config, indent=2))  # JSON is YAML
    with _serve("prometheus", [
        f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        "--storage.tsdb.retention.time=1h",
    ], workdir, port) as (url, proc):
        yield Prometheus(url, proc)


@contextlib.contextmanager
def alertmanager(config_yaml: str, workdir: Path) -> Iterator[str]:
    """Debian's ``prometheus-alertmanager``, clustering off; yields its base URL."""
    port = free_port()
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(config_yaml)
    with _serve("prometheus-alertmanager", [
        f"--config.file={cfg}", f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
        "--log.level=warn",
    ], workdir, port) as (url, _):
        yield url


BROKER = os.environ.get("SNOOPWATCH_TEST_BROKER", "kafka://127.0.0.1:9092")


def require_broker() -> None:
    """Fail (not skip) when the test broker does not answer, like tests/test_kafka.py."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from detectors.settings import bootstrap_servers

    async def probe() -> bool:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(BROKER),
                                    request_timeout_ms=5000)
        try:
            await asyncio.wait_for(producer.start(), 10)
        except Exception:
            return False
        await producer.stop()
        return True

    if not asyncio.run(probe()):
        pytest.fail(f"no Kafka broker at {BROKER}: run 'make kafka-up' (make test does it)")


def fresh_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings on topics and a consumer group of their own, and a free /metrics port."""
    import uuid

    run = uuid.uuid4().hex[:8]
    return Settings(broker=BROKER, input_topic=f"t-{run}-events", alerts_topic=f"t-{run}-alerts",
                    dlq_topic=f"t-{run}-dlq", context_topic=f"t-{run}-context",
                    app_id=f"snoopwatch-test-{run}", web_port=free_port(),
                    data_dir=str(data_dir)).replace(**overrides)


def wait_until(what: str, check: Any, timeout_s: float = 60, every_s: float = 0.5) -> Any:
    """Poll ``check()`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(every_s)
