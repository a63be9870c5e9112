# snoopwatch: `make demo` and `make test` work on a fresh machine (they install what is missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell md5sum pyproject.toml | cut -c1-12)
KAFKA := bash deploy/kafka/kafka.sh
CORE_BUILD := detectors/compiled.json
# Start the broker unless one is already up; stop it afterwards only if we started it.
WITH_KAFKA = started=0; \
	if ! $(KAFKA) status >/dev/null 2>&1; then $(KAFKA) up || exit 1; started=1; fi; \
	trap '[ $$started = 1 ] && $(KAFKA) down' EXIT;

.PHONY: install system-deps demo test bench lint dashboard kafka-up kafka-down clean

install: $(STAMP) system-deps $(CORE_BUILD)

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 is needed for the local Kafka broker" >&2; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

# The detection core compiled with Cython (detectors/build.py), rebuilt when a source changes;
# without a C compiler it says so and the core runs as pure Python.
$(CORE_BUILD): $(STAMP) $(wildcard detectors/*.py detectors/signals/*.py)
	@$(PY) -m detectors.build

# Debian's Prometheus (with promtool) and Alertmanager, for deploy/ checks and the end-to-end
# tests, and openssl, which makes the secured broker's throw-away CA (kafka.sh up --secured;
# keytool comes with Java). Only when missing; services are never started (no systemd here; a
# temporary policy-rc.d denies invoke-rc.d unless the machine already has one).
SYSTEM_BINS := promtool prometheus prometheus-alertmanager amtool
system-deps:
	@pkgs=; for b in $(SYSTEM_BINS); do command -v $$b >/dev/null || pkgs="prometheus prometheus-alertmanager"; done; \
	command -v openssl >/dev/null || pkgs="$$pkgs openssl"; \
	if [ -n "$$pkgs" ]; then \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		tmp_policy=0; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$sudo tee /usr/sbin/policy-rc.d >/dev/null && \
			$$sudo chmod +x /usr/sbin/policy-rc.d && tmp_policy=1; fi; \
		echo "installing Debian packages:$$pkgs"; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install \
			-y -qq --no-install-recommends $$pkgs >/dev/null; rc=$$?; \
		[ $$tmp_policy = 1 ] && $$sudo rm -f /usr/sbin/policy-rc.d; \
		[ $$rc = 0 ] || exit $$rc; \
	fi

demo: install
	@$(WITH_KAFKA) $(VENV)/bin/snoopwatch demo

# The second pass runs the compiled modules' doctests against their source.
test: install lint
	@$(WITH_KAFKA) $(PY) -m pytest && SNOOPWATCH_PURE_PYTHON=1 $(PY) -m pytest -q -p no:cacheprovider detectors

# Throughput, event-to-alert latency and memory per actor on the real broker (issue 6); about
# 15 min at the defaults. Quick: make bench BENCH_ARGS="--events 100000 --quick". Then the
# detection guard: fails if `snoopwatch evaluate` figures fell below benchmarks/detection_reference.json.
bench: install
	@$(WITH_KAFKA) $(PY) benchmarks/bench.py $(BENCH_ARGS)
	$(PY) benchmarks/detection_guard.py

lint: install
	$(VENV)/bin/ruff check .

# Regenerate deploy/grafana/dashboards/snoopwatch.json from stream/dashboards.py.
dashboard: install
	$(PY) -m stream.dashboards

kafka-up: install
	@$(KAFKA) up

kafka-down:
	@$(KAFKA) down

clean:
	-@$(KAFKA) down
	rm -rf state .pytest_cache .ruff_cache
	-$(PY) -m detectors.build --clean
