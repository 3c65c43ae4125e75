# earshot: `make setup` once, `make test` for everything CI runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Prints the server image's tag, building the image only when what goes into
# it changed (the tag is a digest of those inputs).
IMAGE_TAG = $(PY) -m earshot.testing.image
# Installs and starts a Docker engine where none answers (it ships in the package,
# beside Dockerfile.server, so an installed earshot can do the same).
ENGINE = bash src/earshot/testing/docker/ensure-docker.sh
COMPOSE = $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
                  elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)

.PHONY: setup test unit integration isolation integration-gpu lint engine compose image up down logs \
        serve bench load capacity validate validate-peer peer-image example mutate clean

setup: $(STAMP)

# Reinstall when the dependencies change; the package itself is editable.
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing earshot with its test dependencies"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --editable '.[test]'
	@touch $@

# Everything CI runs: lint, the fast suite, the container suite and the docstring
# examples of DOCTESTS (run against a real container), in one pytest session
# (random order, hard timeouts) on JOBS xdist workers as make integration, the
# CUDA image's tests included; then the example project.
# PYTEST_ARGS adds pytest options, e.g. PYTEST_ARGS=--junitxml=reports/junit.xml.
PYTEST_ARGS ?=
# xdist workers of make test and make integration (JOBS=0: one process).
JOBS ?= 6
PARALLEL = -n $(JOBS) --dist loadgroup
DOCTESTS = src/earshot/testing/container.py
test: lint image compose
	@echo "==> tests: tests/ (local server process), integration/ (container), $(DOCTESTS) (doctest)"
	$(PY) -m pytest tests integration $(DOCTESTS) --doctest-modules $(PARALLEL) $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory example

# examples/whisperlive-client, as another project uses earshot: the wheel and
# WhisperLive 0.10's own client in a fresh virtual environment outside this
# checkout (removed afterwards), then that project's pytest.
example: setup engine
	@bash scripts/run-example.sh $(PY)

unit: setup
	$(PY) -m pytest tests

# The real-server suite against the server container (random order, the seed
# printed at the top), on JOBS pytest-xdist workers (JOBS=0: in one process). The
# workers share one server container, which the controller owns; the tests that
# start servers of their own run in a few groups, one group per worker at a time
# (earshot.plugin.server). The CUDA image's own tests (1.3 GB to build on a fresh
# machine) are left to make test and the GPU runner's job: see the README.
integration: image
	$(PY) -m pytest integration -v $(PARALLEL) -m "not cuda_image"

# Each test of integration/ in a process of its own: a table of result and seconds.
isolation: image
	$(PY) scripts/isolation.py integration

# The same suite against the CUDA image with the GPU (float16). Where there is no
# GPU or no NVIDIA container runtime, scripts/gpu-check.sh says which in one line
# and this exits 0 (1 with GPU_REQUIRED=1, as on the GPU runner).
integration-gpu: setup
	@if scripts/gpu-check.sh; then \
	    $(ENGINE) && $(IMAGE_TAG) --variant cuda && \
	    $(PY) -m pytest integration -v --earshot-device cuda $(PYTEST_ARGS); \
	elif [ -n "$(GPU_REQUIRED)" ]; then echo "integration-gpu: GPU_REQUIRED is set: failing"; exit 1; fi

# Pre-release validation: the scenario suite plus the measurements, checked against
# validation.toml; the report goes to reports/<UTC time>/. Exit 0 only for SHIP.
# TARGET=ws://host:port validates a deployment (API_KEY= when it needs one).
# DEVICE=cuda validates the CUDA image with the GPU (the GPU runner's workflow).
TARGET  ?=
API_KEY ?=
DEVICE  ?= cpu
VALIDATE = $(PY) -m earshot.validation $(if $(API_KEY),--api-key $(API_KEY))
# The image built first is the one DEVICE runs (the CUDA image for DEVICE=cuda).
validate: VARIANT := $(if $(filter cuda,$(DEVICE)),cuda,cpu)
validate: $(if $(TARGET),setup,image)
	$(VALIDATE) $(if $(TARGET),--target $(TARGET),--device $(DEVICE))

# The same validation against upstream WhisperLive 0.10 (see peer-image).
validate-peer: peer-image
	$(VALIDATE) --peer

# An image of upstream WhisperLive 0.10 from the package registry (Dockerfile.peer),
# its faster-whisper backend with the bundled tiny.en; reused while its inputs hold.
peer-image: setup engine
	@tag=$$($(PY) -m earshot.testing.peer) && echo "==> peer image: $$tag"

# Mutation testing with mutmut 3 (not part of make test): the modules and the tests
# named in pyproject.toml's [tool.mutmut]. Results stay in mutants/, so a rerun tests
# only what changed; MUTATE_TIMEOUT (seconds) bounds the run. Then the score per module
# (scripts/mutation_score.py; equivalent mutants are listed in docs/suite.md), failing
# under MUTATE_MIN percent. MUTATE_JOBS mutants run at once (default: one per core;
# more pays off, as many of the tests wait on the clock rather than the CPU, and
# mutmut's per-mutant limit is CPU time, so a busy machine times nothing out).
MUTATE_TIMEOUT ?= 10800
MUTATE_MIN     ?= 95
MUTATE_JOBS    ?=
# MUTANTS="NAME..." (mutmut's names, globs too) retests those only, e.g. survivors once
# a test for them is written: mutmut does not retest a survivor by itself.
MUTANTS        ?=
mutate: setup
	@$(PY) -m pip install --quiet 'mutmut==3.8.1'
	@mkdir -p mutants
	@echo "==> mutmut run (at most $(MUTATE_TIMEOUT) s; progress in mutants/run.log)"
	@# The tests run in mutants/, a copy of the tree: the clips come from this checkout's
	@# mirror and cache, which their defaults would look for beside the copy. A mutant of
	@# the leak sweep may sweep too much: its temp dirs are a folder of its own, and it
	@# reaches no Docker engine, so it can remove no other session's dirs or containers.
	@mkdir -p mutants/tmp
	@export EARSHOT_AUDIO_MIRROR="$${EARSHOT_AUDIO_MIRROR:-$$($(PY) -c 'from earshot.audio import default_mirror as m; print(m() or "")')}"; \
	export EARSHOT_AUDIO_CACHE="$${EARSHOT_AUDIO_CACHE:-$(CURDIR)/audio}"; \
	export TMPDIR="$(CURDIR)/mutants/tmp" DOCKER_HOST=unix:///nonexistent/docker.sock; \
	timeout $(MUTATE_TIMEOUT) $(VENV)/bin/mutmut run $(if $(MUTATE_JOBS),--max-children $(MUTATE_JOBS)) $(MUTANTS) >mutants/run.log 2>&1; rc=$$?; \
	    if [ $$rc = 124 ]; then echo "mutate: stopped after $(MUTATE_TIMEOUT) s; run it again to go on"; \
	    elif [ $$rc != 0 ]; then tail -c 2000 mutants/run.log; exit $$rc; fi
	$(PY) scripts/mutation_score.py --min $(MUTATE_MIN)

lint: setup
	$(PY) -m ruff check .

# A Docker engine (installed and started if need be; nothing if one answers).
engine:
	@$(ENGINE)

# VARIANT=cuda: the CUDA image (CUDA 12 cuBLAS and cuDNN; it builds on a CPU host).
VARIANT ?= cpu
image: setup engine
	@tag=$$($(IMAGE_TAG) --variant $(VARIANT)) && echo "==> server image: $$tag"

# A compose command (tests/test_compose.py runs docker-compose.yml alone): Docker's
# plugin or docker-compose; Debian's docker-compose is installed where neither is.
compose:
	@bash scripts/ensure-compose.sh

up: image compose
	tag=$$($(IMAGE_TAG)) && EARSHOT_IMAGE=$$tag $(COMPOSE) up -d server
	@echo "==> server on ws://127.0.0.1:9090 (make logs, make down)"

down:
	@test -n "$(COMPOSE)" || { echo "error: needs docker compose"; exit 1; }
	$(COMPOSE) down --remove-orphans

logs:
	@test -n "$(COMPOSE)" || { echo "error: needs docker compose"; exit 1; }
	$(COMPOSE) logs --tail 100 server

serve: setup
	$(PY) -m earshot.server

bench: setup
	$(PY) bench/server_latency.py

# Locust, headless, against the server container (or TARGET=ws://host:port):
# USERS real-time streams, SPAWN_RATE users started a second, for DURATION
# seconds; WORKERS=N runs Locust's master with N worker processes. Locust's CSV
# and HTML reports go to reports/load-<UTC time>/.
USERS      ?= 4
SPAWN_RATE ?= 1
DURATION   ?= 60
WORKERS    ?= 0
LOAD = $(PY) -m earshot.load
LOAD_TARGET = $(if $(TARGET),--target $(TARGET)) $(if $(API_KEY),--api-key $(API_KEY))
load: $(if $(TARGET),setup,image)
	$(LOAD) load $(LOAD_TARGET) --users $(USERS) --spawn-rate $(SPAWN_RATE) \
	    --duration $(DURATION) --workers $(WORKERS)

# The most concurrent real-time streams the server holds (every one whole, p95
# first text and final <= 1.5 s), then SOAK seconds of churn at 75 % of that.
# PEER=1 also measures upstream WhisperLive 0.10 under the same load.
SOAK ?= 1800
capacity: $(if $(TARGET),setup,image) $(if $(PEER),peer-image)
	$(LOAD) capacity $(LOAD_TARGET) --soak $(SOAK) $(if $(PEER),--peer)

clean:
	-docker ps -aq --filter label=org.earshot.managed | xargs -r docker rm -f
	-docker images -q --filter label=org.earshot.managed | xargs -r docker rmi -f
	-docker images -q --filter label=org.earshot.role=base | xargs -r docker rmi -f
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache src/*.egg-info mutants
