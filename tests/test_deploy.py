"""deploy/compose and deploy/k8s, checked without Docker or a cluster.

- The compose file is valid against the Compose Specification's JSON schema (the copy that
  check-jsonschema ships, ``vendor.compose-spec``), and the Kubernetes manifests against
  Kubernetes 1.30's OpenAPI schemas in strict mode (kubernetes-validate ships them); both
  validators are shown to reject a broken file, and both work offline.
- What no schema sees: every build context, Dockerfile ``COPY`` source and bind mount
  exists; every ``SNOOPWATCH_*`` variable is a real setting; every container command is a
  real ``snoopwatch`` subcommand; the workers scale with the partition count; the metrics
  Service, the probes and Prometheus's discovery agree on names and ports.
- The compose stack's Kafka entry point script runs for real (outside Docker, on free
  ports, with the jars deploy/kafka/kafka.sh fetched) and serves a broker whose auto-created
  topics get ``KAFKA_NUM_PARTITIONS`` partitions.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from detectors.settings import describe
from stream.cli import build_parser
from stream.demo import free_port
from stream.processes import stop_process as stop

REPO = Path(__file__).resolve().parent.parent
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
K8S = REPO / "deploy" / "k8s"
K8S_VERSION = "1.30.0"
SETTINGS_VARS = {env for env, _, _ in describe()}
SNOOPWATCH_IMAGE = "snoopwatch:0.1.0"


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def _dockerfile_copies(dockerfile: Path, final_stage: bool = False
                       ) -> list[tuple[list[str], str]]:
    """(sources, destination) of each ``COPY`` that reads the build context (of the last
    ``FROM`` stage only, with ``final_stage``)."""
    out: list[tuple[list[str], str]] = []
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("FROM ") and final_stage:
            out = []
        words = shlex.split(line.split("#", 1)[0]) if line.strip().startswith("COPY") else []
        if not words or any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        out.append((args[:-1], args[-1]))
    return out


# --- compose -----------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    proc = _check_jsonschema(COMPOSE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace('    command: ["worker"]',
                                                  '    comand: ["worker"]', 1))
    assert "comand" in broken.read_text()
    proc = _check_jsonschema(broken)
    assert proc.returncode != 0 and "comand" in proc.stdout + proc.stderr


def test_compose_has_the_whole_stack() -> None:
    services = _compose()["services"]
    assert {"kafka", "topics", "worker", "forwarder", "prometheus", "alertmanager",
            "grafana"} <= set(services)
    assert "SNOOPWATCH_WORKERS" in str(services["worker"]["deploy"]["replicas"])
    assert services["worker"]["depends_on"]["topics"]["condition"] == \
        "service_completed_successfully"
    prom_mounts = services["prometheus"]["volumes"]
    assert "../prometheus/rules:/etc/prometheus/rules:ro" in prom_mounts
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["dns_sd_configs"][0]["names"] == ["worker"]  # the service name: all replicas
    assert job["dns_sd_configs"][0]["port"] == 6066


def test_compose_builds_mounts_and_settings_exist() -> None:
    doc = _compose()
    for name, svc in doc["services"].items():
        if "build" in svc:
            context = (COMPOSE_DIR / svc["build"]["context"]).resolve()
            dockerfile = context / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), (name, dockerfile)
            for sources, _ in _dockerfile_copies(dockerfile):
                for src in sources:
                    assert (context / src).exists(), f"{dockerfile.name}: COPY {src} missing"
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith((".", "/")):
                assert (COMPOSE_DIR / src).exists(), f"{name}: bind mount {src} missing"
            else:
                assert src in doc["volumes"], f"{name}: undeclared volume {src}"
        env = svc.get("environment") or {}
        unknown = {k for k in env if k.startswith("SNOOPWATCH_")} - SETTINGS_VARS
        assert not unknown, f"{name}: not snoopwatch settings: {unknown}"
        if svc.get("image") == SNOOPWATCH_IMAGE:
            build_parser().parse_args(svc["command"])  # a real subcommand and options
    assert (REPO / ".dockerignore").is_file()  # keeps .venv and state/ out of the context


# --- Kubernetes ----------------------------------------------------------------------------


def _manifests() -> dict[str, dict[str, Any]]:
    return {f.name: yaml.safe_load(f.read_text()) for f in sorted(K8S.glob("*.yml"))}


def test_k8s_manifests_are_valid_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    manifests = _manifests()
    assert len(manifests) >= 6
    for name, doc in manifests.items():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises if invalid
        assert doc["metadata"].get("namespace", "snoopwatch") == "snoopwatch", name


def test_the_k8s_schema_check_rejects_broken_manifests() -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    worker = _manifests()["worker.yml"]
    bad = yaml.safe_load(yaml.safe_dump(worker))
    bad["spec"]["replicas"] = "four"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = yaml.safe_load(yaml.safe_dump(worker))
    bad["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRefs"] = {}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_k8s_workers_scale_with_partitions_and_are_scraped() -> None:
    m = _manifests()
    config = m["configmap.yml"]["data"]
    unknown = {k for k in config if k.startswith("SNOOPWATCH_")} - SETTINGS_VARS
    assert not unknown, f"not snoopwatch settings: {unknown}"
    assert set(config) <= SETTINGS_VARS
    worker = m["worker.yml"]
    assert worker["spec"]["replicas"] == int(config["SNOOPWATCH_PARTITIONS"])
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    pod = worker["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": m["configmap.yml"]["metadata"][
        "name"]}}]
    (port,) = container["ports"]
    assert port["containerPort"] == int(config["SNOOPWATCH_WEB_PORT"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/metrics"
    assert config["SNOOPWATCH_WEB_HOST"] == "0.0.0.0"
    mounts = {v["mountPath"] for v in container["volumeMounts"]}
    assert config["SNOOPWATCH_DATA_DIR"] in mounts  # the root filesystem is read-only

    svc = m["service.yml"]
    assert svc["spec"]["clusterIP"] == "None"  # headless: DNS lists every worker
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    (sport,) = svc["spec"]["ports"]
    assert sport["name"] == "metrics" and sport["targetPort"] == port["name"]
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus-kubernetes.yml").read_text())
    dns = prom["scrape_configs"][0]["dns_sd_configs"][0]
    assert dns["names"] == [f"{svc['metadata']['name']}.{svc['metadata']['namespace']}"
                            ".svc.cluster.local"]
    assert dns["port"] == sport["port"]

    for doc in m.values():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            build_parser().parse_args(c["args"])  # a real subcommand, in every manifest


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(f.name for f in K8S.glob("*.yml"))


# --- secrets are mounted files, never environment values (issue 17) -----------------------

SECURED = COMPOSE_DIR / "docker-compose.secured.yml"
# A name that says it holds a secret; the settings that name a secret's file end in FILE.
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|_KEY\b|PRIVATE", re.IGNORECASE)


def _secret_values(env: dict[str, Any]) -> set[str]:
    """Variables that look like they carry a secret's value rather than its file."""
    return {k for k in env if SECRETISH.search(k) and not k.upper().endswith("FILE")}


def test_the_secured_compose_overlay_mounts_every_secret_as_a_file() -> None:
    proc = _check_jsonschema(SECURED)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    overlay = yaml.safe_load(SECURED.read_text())
    base = _compose()["services"]
    declared = overlay["secrets"]
    assert all(set(spec) == {"file"} and spec["file"].startswith("./secrets/")
               for spec in declared.values()), declared  # files, not environment sources
    for name, svc in overlay["services"].items():
        assert name in base, f"the overlay adds an unknown service {name}"
        env = svc["environment"]
        assert not _secret_values(env), f"{name}: secret values in env {_secret_values(env)}"
        unknown = {k for k in env if k.startswith("SNOOPWATCH_")} - SETTINGS_VARS
        assert not unknown, f"{name}: not snoopwatch settings: {unknown}"
        mounted = set(svc["secrets"])
        assert mounted <= set(declared), name
        files = {k: v for k, v in env.items() if k.endswith("FILE") and v}
        assert files, name
        for k, path in files.items():
            assert path.startswith("/run/secrets/") and path.removeprefix("/run/secrets/") \
                in mounted, f"{name}: {k}={path} is not a secret mounted in it"
    worker = overlay["services"]["worker"]["environment"]
    assert worker["SNOOPWATCH_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert worker["SNOOPWATCH_WEB_TOKEN_FILE"] and worker["SNOOPWATCH_WEB_ALLOW_OPEN"] == "0"
    for name, svc in base.items():  # the base stack holds no secret value either
        assert not _secret_values(svc.get("environment") or {}), name
    assert "deploy/compose/secrets/" in (REPO / ".gitignore").read_text()


def test_k8s_secrets_are_a_mounted_secret_volume_never_env() -> None:
    m = _manifests()
    config = m["configmap.yml"]["data"]
    assert not _secret_values(config), _secret_values(config)
    files = {k: v for k, v in config.items() if k.endswith("FILE") and v}
    assert {"SNOOPWATCH_SASL_PASSWORD_FILE", "SNOOPWATCH_WEB_TOKEN_FILE"} <= set(files)
    assert config["SNOOPWATCH_SECURITY_PROTOCOL"] == "SASL_SSL"
    using = 0
    for fname, doc in m.items():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("containers", []):
            assert "env" not in c, f"{fname}: env values (secrets go in the mounted Secret)"
            if not any("configMapRef" in e for e in c.get("envFrom", [])):
                continue
            using += 1
            assert all("secretRef" not in e for e in c["envFrom"]), fname
            secret_dirs = [vm["mountPath"] for vm in c.get("volumeMounts", [])
                           if "secret" in volumes.get(vm["name"], {}) and vm.get("readOnly")]
            for k, path in files.items():
                assert any(path.startswith(d.rstrip("/") + "/") for d in secret_dirs), \
                    f"{fname}: {k}={path} is not in a mounted Secret"
    assert using >= 3  # worker, forwarder, topics job


# --- the compose stack's Kafka, for real -------------------------------------------------


@pytest.mark.kafka
def test_compose_kafka_entrypoint_starts_a_broker(tmp_path: Path) -> None:
    """kafka.Dockerfile's entry point, outside Docker: the files laid out as its COPY lines
    put them, the jars from deploy/kafka (the same pom.xml), free loopback ports."""
    state = Path(os.environ.get("SNOOPWATCH_STATE_DIR", REPO / "state"))
    lib = state / "kafka" / "lib"
    if not any(lib.glob("kafka_2.13-*.jar")):
        pytest.fail(f"no Kafka jars in {lib}: run 'make kafka-up' once (make test does it)")
    java = shutil.which("java")
    assert java, "java is needed for the broker"
    conf = tmp_path / "opt-kafka"
    conf.mkdir()
    copies = _dockerfile_copies(COMPOSE_DIR / "kafka.Dockerfile", final_stage=True)
    assert len(copies) == 3
    for sources, dest in copies:
        for src in sources:
            assert dest.startswith("/opt/kafka/"), dest
            shutil.copy(REPO / src, conf / dest.removeprefix("/opt/kafka/"))
    port, controller = free_port(), free_port()
    env = {**os.environ, "KAFKA_LIB_DIR": str(lib), "KAFKA_DATA_DIR": str(tmp_path / "data"),
           "KAFKA_CONF_DIR": str(conf), "KAFKA_BROKER_PORT": str(port),
           "KAFKA_CONTROLLER_LISTEN_PORT": str(controller), "KAFKA_ADVERTISED_HOST": "127.0.0.1",
           "KAFKA_NUM_PARTITIONS": "3", "KAFKA_RENDERED_PROPS": str(tmp_path / "server.props"),
           "KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m", "JAVA": java}
    log = tmp_path / "broker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(conf / "entrypoint.sh")], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        partitions = asyncio.run(_auto_topic_partitions(f"127.0.0.1:{port}", proc, 60))
        assert partitions == 3, log.read_text()[-2000:]
    finally:
        stop(proc)
    assert proc.returncode in (0, 143), log.read_text()[-2000:]  # clean stop on SIGTERM
    rendered = (tmp_path / "server.props").read_text()
    assert not re.search(r"@[A-Z_]+@", rendered), "an unrendered placeholder"


async def _auto_topic_partitions(servers: str, proc: subprocess.Popen, timeout_s: float) -> int:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, "the broker exited"
        producer = AIOKafkaProducer(bootstrap_servers=servers, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(producer.start(), 10)
            await producer.send_and_wait("auto-created", b"x")
            break
        except Exception:
            assert time.monotonic() < deadline, "the broker never served"
            await asyncio.sleep(0.5)
        finally:
            await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        (topic,) = await admin.describe_topics(["auto-created"])
    finally:
        await admin.close()
    return len(topic["partitions"])
