"""The suite in a container, for real: build docker/Dockerfile with whichever
engine is here, run `make conformance` inside the image, and run the host's
pytest through the docker runner, whose results must equal the host's qemu-user
runner (the image carries the same Debian qemu-user-static).

Without an engine these tests skip with the reason, and fail under --require-all.
"""
import json
import os
import subprocess
import sys

import pytest

from mmap2conf import containers
from mmap2conf.cli import compare
from mmap2conf.model import REPO

ARCHES = "i386,or1k,mips"
# The image carries Debian 12's qemu-user-static (QEMU 7.2) in /usr/bin, as the host does:
# both sides judge that one release, as a --qemu-dir build.
SYSTEM_QEMU = "/usr/bin"
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def engine(request):
    try:
        engine = containers.find_engine()
    except containers.EngineUnavailable as exc:
        message = f"no container engine: {exc}"
        if request.config.getoption("m2_require_all"):
            pytest.fail(f"{message} (--require-all)")
        pytest.skip(message)
    try:
        containers.ensure_base_image(engine)
        containers.build_image(engine)
        yield engine
    finally:
        containers.stop(engine)


def test_the_image_runs_the_suite_and_prints_the_matrix(engine, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    result = engine.run("run", "--rm", "--network=none", "--tmpfs", containers.NOEXEC_TMPFS,
                        "-v", f"{reports}:/opt/mmap2-conformance/reports",
                        containers.IMAGE, "make", "conformance",
                        f"ARGS=--arch {ARCHES} --runner qemu-user --qemu-dir {SYSTEM_QEMU} -q",
                        timeout=RUN_TIMEOUT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "mmap2 conformance matrix" in result.stdout
    records = json.loads((reports / "conformance.json").read_text())["records"]
    assert {r["column"] for r in records} >= {"i386@qemu-dir", "or1k@qemu-dir", "mips@qemu-dir"}
    assert all(r["outcome"] in ("passed", "xfailed", "n.a.") for r in records
               if r["runner"] == "qemu-user"), "a case failed or was skipped inside the image"


def test_the_docker_runner_answers_as_the_qemu_user_runner(engine, tmp_path):
    reports = {}
    for runner in ("qemu-user", "docker"):
        reports[runner] = tmp_path / f"{runner}.json"
        extra = ["--image", containers.IMAGE] if runner == "docker" else ["--qemu-dir", SYSTEM_QEMU]
        result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p",
                                 "no:cacheprovider", "--require-all", "--arch", ARCHES, "--libc", "raw,glibc",
                                 "--runner", runner, *extra, "--conformance-json", str(reports[runner])],
                                cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                                env={**os.environ, **engine.env})
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert compare(reports["qemu-user"], reports["docker"], ignore_runner=True) == []
    docker_records = json.loads(reports["docker"].read_text())["records"]
    assert {r["runner"] for r in docker_records} == {"docker"}
    assert len(docker_records) == len(json.loads(reports["qemu-user"].read_text())["records"])
