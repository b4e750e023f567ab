# The two commands: `make demo` (set up, then run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: setup demo test test-unit test-drivers test-conformance test-integration lint bench bench-failover chaos

setup:
	./scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py

lint: setup
	$(VENV)/bin/ruff check .

# The layers of tests/: unit (the core, no server) and ryu (ryu_integration, no switch), each
# driver's own tests, the conformance suite per driver, and integration (real servers, OVS, and
# coord-manager processes).
test-unit: setup
	$(PYTEST) tests/unit tests/ryu -q

test-drivers: setup
	$(PYTEST) tests/drivers -q -rs

test-conformance: setup
	$(PYTEST) tests/conformance -q -rs

test-integration: setup
	$(PYTEST) tests/integration -q -rs

# Everything CI runs: lint, unit, the conformance matrix, integration.
test: setup
	$(VENV)/bin/ruff check .
	$(PYTEST) tests -q -rs --durations=10

# The benchmarks, with what they compare against (tooz) installed; see docs/benchmarks.md.
bench: setup
	EXTRAS=test,etcd,os-ken,ryu,bench ./scripts/setup.sh
	$(PY) benchmarks/handover.py
	$(PY) benchmarks/elections.py --switches 1000,5000
	$(PY) benchmarks/failover.py
	$(PY) benchmarks/switch_failover.py --trials 100 --off-trials 5
	$(PY) benchmarks/scale.py --switches 100,1000,5000 --timeout 60 --ovs 100 \
	    --plot docs/images/scale.png
	$(PY) benchmarks/scale.py --topology --switches 100,1000 --backends zookeeper,etcd,embedded \
	    --timeout 120 --cuts 40
	$(PY) benchmarks/rebalance.py --bridges 100 --moves 8

# Failover as the switches see it, in full: >= 100 trials per configuration with the failure
# detector, 20 without (each waits out a session), 1/10/100 switches, 2 s and 10 s sessions,
# ZooKeeper and etcd (about an hour on 2 cores). `make bench` runs the same with 5 trials
# without the detector (about 45 minutes).
bench-failover: setup
	$(PY) benchmarks/switch_failover.py --trials 100 --off-trials 20

# The chaos suite (docs/operations.md): faults against 3 controllers, OVS and a 3-member
# ZooKeeper / etcd, with an invariant monitor. Short form ~1.5 min; SOAK=1 runs 1,000 faults
# (500 per backend, about an hour on 2 cores; CHAOS_FAULTS=N per backend to change it).
chaos: setup
	CHAOS_SOAK=$(SOAK) $(PYTEST) tests/chaos -q -rxX
