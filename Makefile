# rotator: everything a fresh machine needs is installed by these targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OIDC_PEER := tests/peers/oidc
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# A real Keycloak for tests/integration/test_keycloak_*.py: fetched by Maven's own client
# (no download address written here), cached outside the clone, unpacked once.
KEYCLOAK_VERSION := $(shell cat tests/peers/keycloak/VERSION)
KEYCLOAK_CACHE ?= $(HOME)/.cache/rotator/keycloak
KEYCLOAK_ZIP := $(KEYCLOAK_CACHE)/keycloak-quarkus-dist-$(KEYCLOAK_VERSION).zip
KEYCLOAK_HOME := $(KEYCLOAK_CACHE)/keycloak-$(KEYCLOAK_VERSION)
CI_TRUTHY := $(filter 1 true yes on,$(shell echo '$(CI)' | tr A-Z a-z))

.PHONY: all install node keycloak demo test unit lint typecheck bench clean

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

$(OIDC_PEER)/node_modules/.package-lock.json: $(OIDC_PEER)/package.json $(OIDC_PEER)/package-lock.json
	npm ci --prefix $(OIDC_PEER) --no-audit --no-fund --loglevel=error

node: $(OIDC_PEER)/node_modules/.package-lock.json

$(KEYCLOAK_ZIP):
	mvn -q -B dependency:copy -Dartifact=org.keycloak:keycloak-quarkus-dist:$(KEYCLOAK_VERSION):zip \
		-DoutputDirectory=$(KEYCLOAK_CACHE)

# Unpacked beside the zip once. `python -m tests.fixtures.keycloak --template` then starts it
# once (Quarkus re-augments for the dev profile here, not inside a test session) and keeps
# its database, realm imported, as the template each session copies (no-op when it exists).
$(KEYCLOAK_HOME)/.unpacked: $(KEYCLOAK_ZIP) | install
	rm -rf $(KEYCLOAK_HOME) $(KEYCLOAK_HOME).tmp
	mkdir -p $(KEYCLOAK_HOME).tmp
	unzip -q $(KEYCLOAK_ZIP) -d $(KEYCLOAK_HOME).tmp
	mv $(KEYCLOAK_HOME).tmp/keycloak-$(KEYCLOAK_VERSION) $(KEYCLOAK_HOME)
	rmdir $(KEYCLOAK_HOME).tmp
	touch $@

# Without Java or Maven the Keycloak tests skip (saying why); under a truthy CI they must run.
keycloak:
	@if command -v java >/dev/null && command -v mvn >/dev/null; then \
		$(MAKE) --no-print-directory $(KEYCLOAK_HOME)/.unpacked && \
		$(PY) -m tests.fixtures.keycloak --template; \
	elif [ -n "$(CI_TRUTHY)" ]; then \
		echo "keycloak: java and mvn are required under CI" >&2; exit 1; \
	else \
		echo "keycloak: no java or mvn here; the real-Keycloak tests will skip"; \
	fi

# A Keycloak-compatible token endpoint, a moto server and the daemon, live, for about a minute.
demo: install
	$(PY) -m rotator.testing.demo --seconds $${DEMO_SECONDS:-60}

lint: install
	$(VENV)/bin/ruff check rotator tests
	$(VENV)/bin/ruff format --check rotator tests

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest -q tests/unit

# The suite mostly waits (short-lived tokens, servers, subprocesses): pytest-xdist workers
# overlap the waits; the real-Keycloak tests share one worker and one server (loadgroup).
PYTEST_WORKERS ?= 3
test: install node keycloak lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: install node
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m tests.bench.run

clean:  # the Keycloak cache under ~/.cache/rotator/keycloak is kept
	rm -rf $(VENV) $(OIDC_PEER)/node_modules .mypy_cache .ruff_cache .pytest_cache
