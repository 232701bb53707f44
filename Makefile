# The two commands of the quick start. Both bootstrap .venv from the package
# registries on first use and reuse it afterwards.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench dashboards clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/foundation up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	for b in bench/*.py; do case $$b in */__init__.py) ;; *) $(BIN)/python $$b || exit 1;; esac; done

# Regenerate deploy/grafana/dashboards/*.json from deploy/grafana/*.py
# (tests/deploy fails while the committed files are stale).
dashboards: $(STAMP)
	$(BIN)/python -m deploy.grafana

clean:
	rm -rf $(VENV) var .pytest_cache
