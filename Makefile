# One command each on a fresh machine: `make serve` and `make test` create .venv and install what they need.
#   make serve           the service's runtime only (pip install -e .), then seqtag serve
#   make install-train   + the train extra (seqtag train, export, evaluate)
#   make test            + the train, test, backends and encoder extras, then the suite
# Each install has its own stamp in .venv, so `make serve` after `make test` installs nothing and `make test`
# after `make serve` adds only the extras; a change to pyproject.toml installs again.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.installed-serve
TRAIN_STAMP := $(VENV)/.installed-train
TEST_STAMP := $(VENV)/.installed-test
PORT ?= 8000
export PORT

.PHONY: install install-serve install-train install-test test serve reliability clean

install: install-test
install-serve: $(SERVE_STAMP)
install-train: $(TRAIN_STAMP)
install-test: $(TEST_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TRAIN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[train]'
	touch $(SERVE_STAMP) $@

# One pip run for everything (not the serve install first, then the extras: one resolution, not two).
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[train,test,backends,encoder]'
	touch $(SERVE_STAMP) $(TRAIN_STAMP) $@

# Two pytest processes, a test file each at a time (pytest-xdist): many tests wait on servers they started, so
# two keep 2 cores busy (12.8 -> 7.7 minutes here). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test: $(TEST_STAMP)
	.ci/ensure-tools
	$(PYTEST) $(PYTEST_ARGS)

# The tests that try to break the service, then the README's reliability table from what they recorded.
reliability: $(TEST_STAMP)
	.ci/ensure-tools
	$(PYTEST) tests/test_fuzz.py tests/test_bad_json.py tests/test_properties.py tests/test_auth.py tests/test_load.py \
		tests/test_faults.py $(PYTEST_ARGS)
	$(BIN)/python -m benchmarks.reliability_table --readme README.md

# seqtag serve: gunicorn with service/gunicorn_conf.py over $(SEQTAG_MODELS_DIR) (default: models) on $(PORT).
serve: $(SERVE_STAMP)
	$(BIN)/seqtag serve

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
