# One command each on a fresh machine: `make test` and `make serve` create .venv and install the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PORT ?= 8000
export PORT

.PHONY: install test serve reliability clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,backends]'
	touch $@

# Two pytest processes, a test file each at a time (pytest-xdist): many tests wait on servers they started, so
# two keep 2 cores busy (12.8 -> 7.7 minutes here). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test: $(INSTALLED)
	.ci/ensure-tools
	$(PYTEST) $(PYTEST_ARGS)

# The tests that try to break the service, then the README's reliability table from what they recorded.
reliability: $(INSTALLED)
	.ci/ensure-tools
	$(PYTEST) tests/test_fuzz.py tests/test_properties.py tests/test_auth.py tests/test_load.py tests/test_faults.py \
		$(PYTEST_ARGS)
	$(BIN)/python -m benchmarks.reliability_table --readme README.md

serve: $(INSTALLED)
	SEQTAG_MODELS_DIR=$${SEQTAG_MODELS_DIR:-models} $(BIN)/gunicorn -c service/gunicorn_conf.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
