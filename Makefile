# Custos: `make run` starts the embedded stack, `make test` runs every test. Both set everything up
# on a fresh machine and are quick when it is already set up: the virtualenv (torch included) lives in
# a cache outside the clone and is rebuilt only when pyproject.toml or constraints.txt change.

SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/custos
VENV ?= $(CACHE)/venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEPS_HASH := $(shell cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_HASH)
# The editable install points at one clone; a different clone (CI) re-points it (no downloads).
LINK_STAMP := $(VENV)/.link-$(shell echo "$(CURDIR)" | sha256sum | cut -c1-16)-$(DEPS_HASH)
APT_PACKAGES := prometheus prometheus-alertmanager redis-server nginx wrk maven
PYTEST_ARGS ?=

export CUSTOS_CACHE := $(CACHE)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test setup system-deps bench bench-deps lint format generate clean-venv

run: setup
	$(VENV)/bin/custos up $(if $(CONFIG),--config $(CONFIG))

test: setup system-deps
	$(PY) -m tests.prepare
	bash deploy/tools/install.sh >/dev/null
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(LINK_STAMP)

$(DEPS_STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel hatchling editables
	# torch from PyPI is a multi-GB CUDA build: it is downloaded once into the cached venv, with a
	# progress bar (no -q here: minutes of silence look like a hang).
	@echo "Installing Custos and its extras (the first time this downloads torch, several GB) ..."
	$(PIP) install --progress-bar on -c constraints.txt -e '.[inference,gpu,dev]'
	rm -f $(VENV)/.deps-* $(VENV)/.link-*
	touch $@

$(LINK_STAMP): $(DEPS_STAMP)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.link-*
	touch $@

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

bench-deps: setup system-deps
	@command -v valgrind >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind; }
	@test -x $(CACHE)/litellm-venv/bin/litellm || { python3 -m venv $(CACHE)/litellm-venv && \
	  $(CACHE)/litellm-venv/bin/pip install -q 'litellm[proxy]'; }
	@$(PY) -c 'import granian' 2>/dev/null || $(VENV)/bin/pip install -q 'granian==2.8.9'

bench: bench-deps
	$(VENV)/bin/custos bench proxy

# Regenerate the committed dashboards, rule exports and rendered manifests (tests check they are current).
generate: setup
	$(PY) dashboards/generate_grafana.py
	$(PY) dashboards/generate_kibana.py
	$(PY) deploy/tools/export_rules.py
	bash deploy/tools/render-k8s.sh

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean-venv:
	rm -rf $(VENV)
