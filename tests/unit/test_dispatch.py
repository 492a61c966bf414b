"""One guest for every helper of a kernel (mmap2conf/dispatch.py): a real Debian 686
kernel under qemu-system-i386, booted once, serving helpers of several flavours and
both scratch kinds, refusing what it must refuse, and judging cases as a guest per
helper did (each case's verdict is the one its row states for that kernel)."""
import pytest

from mmap2conf import build, model
from mmap2conf.dispatch import Guest
from mmap2conf.engine import Engine, Outcome, Suite
from mmap2conf.protocol import ProtocolError
from mmap2conf.runners import Options

CASES = ("errors/ebadf-never-opened", "errors/eperm-exec-on-a-noexec-mount", "offset-unit/pgoff=1",
         "libc-offset/mmap64-offset=4096")


@pytest.fixture(scope="module")
def i386_kernel():
    suite = Suite(Options(kinds={"linux"}), arches={"i386"}, flavours={"raw", "glibc"})
    (runner,) = [r for r in suite.systems(suite.configs["i386"]) if r.machine.name == "i386-pc"]
    return suite, runner


def test_one_boot_serves_every_flavour_and_scratch_kind_of_the_kernel(i386_kernel):
    suite, runner = i386_kernel
    chosen = [i for i in suite.instances() if i.runner is runner and i.case.key in CASES]
    assert {i.flavour for i in chosen} == {"raw", "glibc"} and {i.case.scratch for i in chosen} >= {"noexec", None}
    engine = Engine(suite)
    try:
        # Twice over, so that the helper on the console changes between every two cases.
        records = [engine.run(i) for i in chosen + chosen[::-1]]
        (guest,) = engine.guests.values()
        assert guest.session.starts == 1, "one boot for every helper and scratch kind"
    finally:
        engine.close()
    assert not engine.guests and not guest.session.alive()
    ran = [r for r in records if r.outcome is not Outcome.NA]
    assert {r.case for r in ran} == set(CASES) and {r.flavour for r in ran} == {"raw", "glibc"}
    assert {r.outcome for r in ran} == {Outcome.PASSED}, [(r.nodeid, r.reason) for r in ran]
    assert {r.properties["libc"] for r in ran if r.flavour == "glibc"} == {"glibc"}, "the glibc helper answered"


def test_an_abi_the_kernel_cannot_run_is_refused_and_the_guest_goes_on(i386_kernel):
    _, runner = i386_kernel
    own, foreign = (build.helper_path(model.load_all()[name], "raw") for name in ("i386", "x86_64"))
    guest = Guest(lambda workdir: runner.dispatcher_command([own, foreign]), runner.console, [own, foreign])
    try:
        # ENOEXEC is 8 on every ABI (include/uapi/asm-generic/errno-base.h).
        with pytest.raises(ProtocolError, match=r"exec failed: errno 8\b") as refused:
            guest.serve(foreign, False, "x86_64").request({"op": "probe", "id": "p"})
        assert refused.value.kind == "cannot-start"     # unavailable there, not a broken system
        answer = guest.serve(own, True, "i386").request({"op": "probe", "id": "p"})
        assert answer["id"] == "p" and answer["stub"] == "i386"
        # The init itself answers no case: only exec, so no case meets the wrong helper.
        guest.session.end_input()
        with pytest.raises(ProtocolError, match="a dispatching init only takes exec"):
            guest.session.request({"op": "probe", "id": "p"})
        assert guest.session.starts == 1
    finally:
        guest.close()
    assert not guest.session.alive()
