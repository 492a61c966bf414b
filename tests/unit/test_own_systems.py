"""A user's own systems, as the README tells them to name them: a qemu build directory
that holds only qemu-<arch> names (bookworm-backports' QEMU 10.0, unpacked by the
bootstrap), and a kernel image given as a plain file (Debian 13's armmp kernel copied
out of its package). Both run real cases and are named exactly in the records."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from mmap2conf import archive, kernels, machines
from mmap2conf.model import REPO, load_all
from mmap2conf.runners.qemu_user import releases


def conformance(tmp_path, *args):
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p", "no:cacheprovider",
                             "--require-all", "--libc", "raw", "-k", "offset-unit", "--conformance-json", str(report),
                             *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return [r for r in json.loads(report.read_text())["records"] if r["outcome"] != "n.a."]


def test_a_qemu_build_directory_with_only_qemu_arch_names(tmp_path):
    release = next(r for r in releases() if r["from"] == "archive")
    directory = archive.fetch(release["package"], release["suite"]) / release["dir"]
    assert (directory / "qemu-i386").is_file() and not list(directory.glob("qemu-*-static"))
    records = conformance(tmp_path, "--arch", "i386", "--runner", "qemu-user", "--qemu-dir", str(directory))
    assert records and {r["system"] for r in records} == {"qemu-dir"}
    assert {r["outcome"] for r in records} == {"passed"}
    identity = records[0]["identity"]
    assert identity["binary"] == str(directory / "qemu-i386") and identity["version"].startswith(release["release"])
    assert records[0]["properties"]["emulator_version"] == identity["version"]


def test_a_kernel_image_given_as_a_plain_file(tmp_path):
    arm_virt = machines.load_machines(load_all())["arm-virt"]
    package = next(k for k in arm_virt.kernels if k.suite == "trixie")
    image = tmp_path / "zImage"
    shutil.copyfile(kernels.find_kernel(archive.fetch(package.package, package.suite, package.arch), package.path,
                                        package.package), image)
    records = conformance(tmp_path, "--arch", "armhf", "--runner", "linux", "--kernel", str(image))
    release = kernels.kernel_identity(image)["release"]
    assert records and {r["system"] for r in records} == {f"linux-{release}"}
    assert {r["outcome"] for r in records} == {"passed"}
    identity, measured = records[0]["identity"], records[0]["properties"]
    assert Path(identity["kernel"]) == image and identity["machine"] == "arm-virt"
    assert measured["kernel_release"] == release and measured["kernel_bits"] == 32 and measured["page_size"] == 4096
