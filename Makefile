# One command each on a fresh machine: `make test` and `make serve` create .venv and install the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PORT ?= 8000
export PORT

.PHONY: install test serve clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: $(INSTALLED)
	.ci/ensure-tools
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

serve: $(INSTALLED)
	SEQTAG_MODELS_DIR=$${SEQTAG_MODELS_DIR:-models} $(BIN)/gunicorn -c service/gunicorn_conf.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
