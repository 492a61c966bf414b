# The two entry points of the README: `make conformance` (the main job) and
# `make check` (the project's tests). Both bootstrap first; bootstrapping twice
# installs nothing the second time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# pytest-xdist workers; at the current size a serial run is as fast (see bench/).
JOBS ?= 0
REPORTS := reports
CONFORMANCE := $(PY) -m pytest tests/test_conformance.py -p no:cacheprovider -n $(JOBS)

.PHONY: bootstrap conformance check unit bench clean

bootstrap:
	$(PYTHON) -m mmap2conf.bootstrap

# Every configuration; the matrix ends the output, the records go to reports/.
conformance: bootstrap
	$(CONFORMANCE) $(ARGS) --conformance-json $(REPORTS)/conformance.json --junitxml $(REPORTS)/conformance.xml

# The harness's own tests first, then the full conformance run in strict mode:
# a configuration that cannot run here is a failure, not a skip.
check: bootstrap
	$(PY) -m pytest tests/unit -p no:cacheprovider -q
	$(CONFORMANCE) -q --require-all --conformance-json $(REPORTS)/check.json --junitxml $(REPORTS)/check.xml

unit: bootstrap
	$(PY) -m pytest tests/unit -p no:cacheprovider -q

bench: bootstrap
	$(PY) bench/bench_matrix.py

clean:
	rm -rf $(REPORTS) .cache
