# The two commands of the quick start. Both bootstrap .venv from the package
# registries on first use and reuse it afterwards.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench dashboards chaos cluster-soak cluster-protocols clean

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

# Every chaos scenario at full length, each with its report in var/chaos/<scenario>/.
# lossy-r1-wipe must end INVALID (exit 1): it shows that the checker catches a loss.
CHAOS_DURATION ?= 30
chaos: $(STAMP)
	for s in kill-workers pause-processes kill-supervisor kill-nats-leader pause-nats partition-minority partition-leader partition-bridge client-link-faults mixed; do \
		$(BIN)/foundation chaos run $$s --duration $(CHAOS_DURATION) --report var/chaos/$$s || exit 1; done
	$(BIN)/foundation chaos run lossy-r1-wipe --duration 10 --report var/chaos/lossy-r1-wipe; test $$? -eq 1

# The cluster failover tests (kill -9 of stream leaders on a real 3-server
# cluster) run once in `make test`; this repeats them SOAK_RUNS times.
SOAK_RUNS ?= 10

cluster-soak: $(STAMP)
	for i in $$(seq $(SOAK_RUNS)); do $(BIN)/python -m pytest -q -p no:cacheprovider tests/broker/test_cluster.py tests/supervisor/test_cluster_failover.py tests/supervisor/test_cluster_services.py || exit 1; done

# The coordination protocols' tests on a 3-server cluster with 3 replicas of
# every bucket, instead of one server.
cluster-protocols: $(STAMP)
	FOUNDATION_TEST_CLUSTER=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/protocols

clean:
	rm -rf $(VENV) var .pytest_cache
