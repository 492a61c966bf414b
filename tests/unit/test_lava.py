"""The LAVA test definition and job template, validated with LAVA's own schemas
(lava-common), and the result lines run through LAVA's own lava-test-case helper
(lava-dispatcher); both unpacked from Debian's packages by mmap2conf/debian.py."""
import json
import os
import re
import subprocess
from collections import Counter

import pytest
import yaml

from mmap2conf import debian
from mmap2conf.cli import main
from mmap2conf.lava import RESULT, case_name, lava_lines
from mmap2conf.model import REPO

DEFINITION = REPO / "lava" / "mmap2-conformance.yaml"
JOB = REPO / "lava" / "qemu-job.yaml"
# lava_dispatcher/actions/test/shell.py: a signal is <LAVA_SIGNAL_NAME params> (_reset_patterns)
SIGNAL = re.compile(r"<LAVA_SIGNAL_(\S+) ([^>]+)>")


@pytest.fixture(scope="module")
def lava_schemas():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(debian.lava_common_path()))
        from lava_common import schemas
        from lava_common.schemas.test import testdef
        yield schemas, testdef


def test_the_test_definition_is_valid_for_lava(lava_schemas):
    _, testdef = lava_schemas
    definition = yaml.safe_load(DEFINITION.read_text())
    testdef.validate(definition)
    assert definition["metadata"]["format"] == "Lava-Test Test Definition 1.0"
    # LAVA runs the steps as one shell script: it must at least parse.
    script = "\n".join(definition["run"]["steps"])
    subprocess.run(["sh", "-n", "-c", script], check=True)
    assert "--runner native" in script and "mmap2-conformance lava " in script


def test_the_job_template_is_valid_for_lava(lava_schemas):
    schemas, _ = lava_schemas
    job = yaml.safe_load(JOB.read_text())
    schemas.validate(job, strict=True)
    definition = yaml.safe_load(DEFINITION.read_text())
    [test] = [a["test"] for a in job["actions"] if "test" in a]
    [entry] = test["definitions"]
    assert (REPO / entry["path"]).is_file() and entry["name"] == definition["metadata"]["name"]
    assert set(entry.get("params", {})) <= set(definition["params"])
    assert job["device_type"] == "qemu"


def test_lava_refuses_what_its_schema_does_not_know(lava_schemas):
    schemas, testdef = lava_schemas
    import voluptuous
    job = yaml.safe_load(JOB.read_text())
    job["actions"][0]["deploy"]["to"] = "nowhere"
    with pytest.raises(voluptuous.Invalid):
        schemas.validate(job, strict=True)
    definition = yaml.safe_load(DEFINITION.read_text())
    definition["metadata"]["format"] = "Lava-Test Test Definition 2.0"
    with pytest.raises(voluptuous.Invalid):
        testdef.validate(definition)


def overlay_bin(directory):
    """LAVA's helpers as the dispatcher puts them on the device: the shell's #! line first,
    then the script, mode 755 (lava_dispatcher/actions/deploy/overlay.py)."""
    directory.mkdir()
    for script in debian.lava_test_shell_dir().iterdir():
        target = directory / script.name
        target.write_text("#!/bin/sh\n\n" + script.read_text())
        target.chmod(0o755)
    return directory


def test_lava_test_case_reports_every_case(json_report, tmp_path):
    """Run the printed lines with LAVA's own lava-test-case and read its signals the way
    the dispatcher does (shell.py handle_testcase: each parameter KEY=VALUE, one "=";
    connection.py SignalMatch: result pass, fail, skip or unknown)."""
    document = json.loads(json_report.read_text())
    lines = lava_lines(document)
    script = tmp_path / "cases.sh"
    script.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, PATH=f"{overlay_bin(tmp_path / 'bin')}:{os.environ['PATH']}",
               LAVA_RESULT_DIR=str(tmp_path / "lava"))
    env.pop("KMSG", None)
    out = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=True, timeout=600)
    results = {}
    for name, params in SIGNAL.findall(out.stdout):
        assert name == "TESTCASE"
        data = {}
        for param in params.split():
            key, value = param.split("=")       # more than one "=" is a JobError in LAVA
            data[key.lower()] = value
        assert data["result"] in ("pass", "fail", "skip", "unknown")
        assert data["test_case_id"] not in results
        results[data["test_case_id"]] = data["result"]
    assert len(results) == len(document["records"])
    for record in document["records"]:
        name = case_name(record)
        assert results[name] == RESULT[record["outcome"]]
        assert (tmp_path / "lava" / "results" / name / "result").read_text().strip() == results[name]
    assert Counter(results.values()) == Counter(RESULT[r["outcome"]] for r in document["records"])


def test_the_lava_command_prints_one_line_per_case(outcomes_report, capsys):
    assert main(["lava", str(outcomes_report)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "lava-test-case i386.glibc.qemu-user.large-offsets.pgoff_3d0x100001 --result pass" in lines
    assert "lava-test-case armhf.glibc.qemu-user.return-value.error-is-minus-one --result unknown" in lines
    assert all(re.fullmatch(r"lava-test-case [-_a-zA-Z0-9.]+ --result (pass|fail|skip|unknown)", line)
               for line in lines)
