# The two entry points of the README: `make conformance` (the main job) and
# `make check` (the project's tests). Both bootstrap first; bootstrapping twice
# installs nothing the second time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# pytest-xdist workers: one per core (every helper's cases stay on one worker); measured
# on 2 cores (make bench): the whole default matrix warm in 26 to 28 s with 2 workers on one machine,
# 41 to 54 s on a slower one, where it took 53 to 66 s serially (README, Benchmark). JOBS=0 runs serially.
JOBS ?= $(shell nproc)
REPORTS := reports

.PHONY: bootstrap conformance check unit faults bench clean

bootstrap:
	$(PYTHON) -m mmap2conf.bootstrap

# Every configuration; the matrix ends the output; reports/ gets the JSON records,
# JUnit XML, the HTML report and its screenshot.
conformance: bootstrap
	$(PY) -m mmap2conf run --jobs $(JOBS) --reports $(REPORTS) -- $(ARGS)

# The harness's own tests first, then the fault-injection tests (real faults, each with
# its named outcome and nothing left behind), then the full conformance run in strict
# mode (a configuration that cannot run here is a failure, not a skip) with its KTAP, KCIDB
# and LAVA forms read back by the kernel's KTAP parser, kcidb-io and LAVA's helper,
# then one tox environment as the README documents it (or1k: one flavour, cheap), then
# the ssh runner against a local OpenSSH server (compared case by case with the native runner),
# then the suite in its container image, inside and through the docker runner.
check: bootstrap
	$(PY) -m pytest tests/unit -p no:cacheprovider -q
	$(PY) -m pytest tests/faults -p no:cacheprovider -q
	$(PY) -m mmap2conf run --require-all --jobs $(JOBS) --reports $(REPORTS)/check \
		--ktap $(REPORTS)/check/conformance.ktap -- -q
	$(PY) -m mmap2conf kcidb $(REPORTS)/check/conformance.json -o $(REPORTS)/check/conformance.kcidb.json
	MMAP2CONF_REPORT=$(REPORTS)/check/conformance.json $(PY) -m pytest -p no:cacheprovider -q \
		tests/unit/test_ktap.py tests/unit/test_kcidb.py tests/unit/test_lava.py -k given
	$(VENV)/bin/tox -e or1k -- -q --require-all
	$(PY) -m pytest tests/test_ssh.py -p no:cacheprovider -q --require-all
	$(PY) -m pytest tests/test_docker.py -p no:cacheprovider -q --require-all

unit: bootstrap
	$(PY) -m pytest tests/unit -p no:cacheprovider -q

faults: bootstrap
	$(PY) -m pytest tests/faults -p no:cacheprovider -q

# Both runs of the benchmark take ARGS (pytest arguments, e.g. ARGS="--arch i386").
bench: bootstrap
	JOBS=$(JOBS) $(PY) bench/bench_matrix.py $(ARGS)

clean:
	rm -rf $(REPORTS) .cache
