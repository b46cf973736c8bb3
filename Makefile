# Two commands do everything on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Most tests wait on real peers (leases, timeouts, restarts) rather than compute: one worker per core
# halves the suite's time. More workers than cores made tests miss their own timeouts on a busy machine.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/allocate_speed.py
	$(BIN)/python bench/plan_speed.py --sizes 100,1000
	$(BIN)/python bench/modbus_latency.py --seconds 10
	$(BIN)/python bench/ocpp_fanout.py --sizes 100,500 --rounds 5
	$(BIN)/python bench/openadr_event_latency.py
	$(BIN)/python bench/acn.py --start 2020-01-13 --days 7 --cap-kw 150,100,75,50

demo: $(STAMP)
	$(BIN)/gateway demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
