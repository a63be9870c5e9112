# snoopwatch: `make demo` and `make test` work on a fresh machine (they install what is missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell md5sum pyproject.toml | cut -c1-12)
KAFKA := bash deploy/kafka/kafka.sh
# Start the broker unless one is already up; stop it afterwards only if we started it.
WITH_KAFKA = started=0; \
	if ! $(KAFKA) status >/dev/null 2>&1; then $(KAFKA) up || exit 1; started=1; fi; \
	trap '[ $$started = 1 ] && $(KAFKA) down' EXIT;

.PHONY: install demo test lint kafka-up kafka-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 is needed for the local Kafka broker" >&2; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

demo: install
	@$(WITH_KAFKA) $(VENV)/bin/snoopwatch demo

test: install lint
	@$(WITH_KAFKA) $(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

kafka-up: install
	@$(KAFKA) up

kafka-down:
	@$(KAFKA) down

clean:
	-@$(KAFKA) down
	rm -rf state .pytest_cache .ruff_cache
