# One command each on a fresh machine: `make serve` and `make test` create .venv and install what they need.
#   make serve           the service's runtime only (pip install -e .), then seqtag serve
#   make install-train   + the train extra (seqtag train, export, evaluate)
#   make test            + the train, test, backends, encoder, docs and ray extras, then the suite
#   make docs            the documentation site (MkDocs Material) into site/, strictly; make docs-serve to edit it
# Each install has its own stamp in .venv, so `make serve` after `make test` installs nothing and `make test`
# after `make serve` adds only the extras; a change to pyproject.toml installs again.
PYTHON ?= python3
# The checkout this Makefile belongs to (links resolved): what pip installs, wherever make is run from.
ROOT := $(patsubst %/,%,$(dir $(realpath $(firstword $(MAKEFILE_LIST)))))
VENV := .venv
BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.installed-serve
TRAIN_STAMP := $(VENV)/.installed-train
TEST_STAMP := $(VENV)/.installed-test
PORT ?= 8000
export PORT

.PHONY: install install-serve install-train install-test test serve reliability docs docs-serve clean

install: install-test
install-serve: $(SERVE_STAMP)
install-train: $(TRAIN_STAMP)
install-test: $(TEST_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '$(ROOT)'
	touch $@

$(TRAIN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '$(ROOT)[train]'
	touch $(SERVE_STAMP) $@

# One pip run for everything (not the serve install first, then the extras: one resolution, not two). pip compiles
# the installed modules on one core; compileall does it on every core (78 -> 61 s here); a file it cannot compile
# (a template, another Python's syntax) is left out, as pip leaves it out. So are the packages' own test suites
# and sympy (a fifth of the 21,700 modules), which nothing imports: 44 -> 29 s; so are pip, setuptools and
# Ray's RLlib, LLM and Serve (2,000 more), which the tests never import either. Compiling as the tests import
# instead cost more than it saved (10 min 15 s against 9 min 35 s): the first processes all compile at once.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e '$(ROOT)[train,test,backends,encoder,docs,ray]'
	$(BIN)/python -m compileall -q -j 0 -x '/(tests|sympy|pip|setuptools|ray/(rllib|llm|serve))/' $(VENV)/lib > /dev/null || true
	touch $(SERVE_STAMP) $(TRAIN_STAMP) $@

# Two pytest processes, a test file each at a time (pytest-xdist): many tests wait on servers they started, so
# two keep 2 cores busy (12.8 -> 7.7 minutes here). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
# Files are handed out longest first (tests/conftest.py orders them; --no-loadscope-reorder keeps that order).
# Python keeps the bytecode of what compileall left out once one process compiled it, unless PYTHONDONTWRITEBYTECODE
# is set (some shells set it): then every process the tests start would compile it again.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: $(TEST_STAMP)
	.ci/ensure-tools
	$(PYTEST) $(PYTEST_ARGS)

# The tests that try to break the service, then the reliability page's table (docs/reliability.md) from what they recorded.
reliability: $(TEST_STAMP)
	.ci/ensure-tools
	$(PYTEST) tests/test_fuzz.py tests/test_bad_json.py tests/test_properties.py tests/test_auth.py tests/test_load.py \
		tests/test_faults.py $(PYTEST_ARGS)
	$(BIN)/python -m benchmarks.reliability_table --page docs/reliability.md

# seqtag serve: gunicorn with service/gunicorn_conf.py over $(SEQTAG_MODELS_DIR) (default: models) on $(PORT).
serve: $(SERVE_STAMP)
	$(BIN)/seqtag serve

# The documentation site: every page under docs/, the model cards, the API reference from the service's OpenAPI
# document. --strict: a broken link or anchor, or a page missing from the nav, fails the build (the suite builds it too).
docs: $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

DOCS_PORT ?= 8001
docs-serve: $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

clean:
	rm -rf $(VENV) .pytest_cache build site *.egg-info
