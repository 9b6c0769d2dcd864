# pickserve: `make run` serves, `make test` checks everything. Both set themselves up:
# a virtualenv in .venv with the project installed (editable) and what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000
POOL ?=
DEMO_ARGS ?=
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: run test test-fast demo lint bench replay-demo clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service --port $(PORT) $(if $(POOL),--pool $(POOL))

demo: $(STAMP)
	$(BIN)/python -m service.tools.demo --url http://127.0.0.1:$(PORT) $(DEMO_ARGS)

test: $(STAMP)
	@bash deploy/ensure-redis-server.sh
	@bash deploy/ensure-chromium.sh
	@bash deploy/ensure-label-studio.sh
	@bash deploy/ensure-promtool.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# The tier that starts no process (no Ray, no Redis): a minute or two.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit -n 2

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/replay_speed.py
	$(BIN)/python benchmarks/lease_backlog.py
	$(BIN)/python benchmarks/rerank_speed.py

replay-demo: $(STAMP)
	$(BIN)/python -m picker replay tests/data/benchmarks/emocontext/predictions.npy \
		tests/data/benchmarks/emocontext/oracle.npy --stream-size 1000 \
		--method modelpicker random --gamma 2 4 8 --budget 90 150

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
