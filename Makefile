# The everyday loop: `make format` before a commit, `make lint test-fast` while working, `make test` before a push.
# CI (.ci/run) runs the same checks in a fresh virtual environment.
PYTHON ?= python
# the core behaviour in about two minutes: counts, training, reload, generate == greedy reference, bad inputs
FAST = not slow and not multiprocess and not browser
# pytest-xdist workers; tests/conftest.py gives each one torch thread, so JOBS = the number of cores
JOBS ?= 2

.PHONY: lint format test-fast test

lint:
	ruff check .
	ruff format --check .

format:
	ruff check --fix .
	ruff format .

test-fast:
	$(PYTHON) -m pytest -q -n $(JOBS) -m "$(FAST)"

test:
	$(PYTHON) -m pytest -q -n $(JOBS)
