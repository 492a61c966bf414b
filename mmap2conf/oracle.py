"""The oracle: what a case must observe, from ABI facts and the row, and the verdict.

Expected values come only from arches/ facts (each with its source) and from the
case row (with its source); never from what a runner happened to answer.
Decoding a raw system call result happens here, once, from the ABI's error
convention, independently of the stub's own decoding, so the two check each other.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .cases import CALL_EXPECTS, FILE_CALLS, RAW_CALLS, Case, fact_value
from .knownissues import KINDS
from .model import Config

MARKER_MAGIC = 0x4D32434B
MARKER_BYTES = 12     # three native 32-bit words at the start of a marked block (helpers/PROTOCOL.md)
WRITE_MAGIC = 0x4D325752   # "M2WR": what write_readback writes at offset 0 of the mapping
MAN_SHARED_WRITE = ("mmap(2) MAP_SHARED: updates to the mapping are visible to other processes mapping the "
                    "same region, and are carried through to the underlying file; the file's bytes at the "
                    "mapping's offset are what read(2) returns (one page cache)")
EXTEND_BYTES = 4096   # extend writes the file's last 4096-byte block (helpers/PROTOCOL.md)
MAN_EINVAL_UNIT = ("mmap2(2) ERRORS: EINVAL (Various platforms where the page size is not 4096 "
                   "bytes.) offset * 4096 is not a multiple of the system page size")
MAN_EINVAL_MMAP = ("mmap(2) ERRORS: EINVAL We don't like addr, length, or offset "
                   "(e.g., they are too large, or not aligned on a page boundary)")
MAN_PAST_EOF = ("mmap(2) ERRORS: SIGBUS attempted access to a page of the buffer that lies beyond the end "
                "of the mapped file; NOTES: the remaining bytes in the partial page at the end of the "
                "mapping are zeroed; tmpfs: mm/shmem.c shmem_get_folio_gfp -EINVAL for index << PAGE_SHIFT "
                ">= i_size, which shmem_fault turns into VM_FAULT_SIGBUS (Linux 6.1.20 1854-1856, 2140; "
                "6.18.2 2452-2454, 2739)")
MAN_UNIT_IA64 = ("mmap2(2) DESCRIPTION: offset in 4096-byte units; VERSIONS: on ia64, the unit is the "
                 "system page size (no other ABI is named)")
# The kinds of deviation, as known-issues.toml names them: an answer the manual page does
# not allow, and one it allows that is not Linux's on that ABI and kernel word size.
VIOLATES, DIFFERS = KINDS
MAN_RETURN = ("mmap2(2) RETURN VALUE: on success a pointer to the mapped area; on error -1 "
              "and errno; mmap(2): the address is page aligned, MAP_FIXED places it exactly at addr")


class OracleError(Exception):
    """The facts contradict each other; the suite cannot state an expectation."""


@dataclass
class Expectation:
    success: bool
    errno: str | None = None
    block: int | None = None      # 4096-byte file block expected at the start of the mapping
    zero: bool = False            # anonymous: the mapping reads as zeros
    high: bool = False            # the address must have its top bit set (above 2 GiB)
    below: int | None = None      # the mapping must end at or below this address (task_size)
    maps: bool = True             # False for the file calls (extend, open): no mapping to check
    clause: str = ""
    sources: list[str] = field(default_factory=list)
    # File mappings: what each read must see, from the file's size, its markers and the
    # page size: a block number (its marker), "zero" (a hole, or past the end of the file
    # in the page that holds it) or "SIGBUS" (a page past that one; the read that dies).
    reads: list[tuple[int, int | str]] = field(default_factory=list)
    readback: list[int] | None = None   # write_readback: the words the file must hold afterwards
    # The other answers the manual page allows (the row's allowed); None: the row states none.
    alternatives: list["Expectation"] | None = None

    def describe(self) -> dict:
        if not self.success:
            return {"result": "error", "errno": self.errno}
        if not self.maps:
            return {"result": "success"}
        sigbus = [offset for offset, want in self.reads if want == "SIGBUS"]
        return {"result": "mapped", **({"block": self.block} if self.block is not None else {}),
                **({"end_at_most": f"{self.below:#x}"} if self.below is not None else {}),
                **({"contents": "zero"} if self.zero else {}),
                **({"signal": "SIGBUS", "signal_at": sigbus[0]} if sigbus else {}),
                **({"readback": f"{self.readback[0]:#x},{self.readback[1]:#x},{self.readback[2]:#x}"}
                   if self.readback else {})}


def expect_call(config: Config, properties, case: Case, request: dict) -> Expectation:
    """What the case must observe on a system with these properties (sut.Properties),
    and, where the row states the answers the manual page allows, those of the others."""
    page_size, page_source = properties.page_size, properties.sources["page_size"]
    wanted, sources = case.expectation_for(properties), [case.source, *filter(None, [case.allowed_source])]
    if wanted.startswith("fact:"):
        name = wanted.removeprefix("fact:")
        wanted = fact_value(config, name, properties)
        if wanted is None:
            raise OracleError(f"{config.path.name}: states no {name} for this system")
        sources.append(config.row_facts[name].source)
    if case.call in FILE_CALLS:   # no offset to align, no mapping: the row's answer is all there is
        expectation = _file_call_answer(case, wanted, sources)
        if case.allowed:
            expectation.alternatives = [_file_call_answer(case, answer, [case.allowed_source])
                                        for answer in case.allowed if answer != wanted]
        return expectation
    if case.call == "mmap2":
        byte_offset = request.get("offset", 0) * config.unit_bytes(page_size)
        unit_sources = [config.offset_unit.source, page_source]
    else:
        byte_offset = request.get("offset", 0)
        unit_sources = [page_source]
    # The offset's alignment is checked first: by libc before any system call, and by
    # the kernels whose unit is 4096 in their mmap2 wrapper, before the descriptor is
    # even looked up (semantics.md section 2). So it wins over the row's own error,
    # and the row's allowed answers (to another question) do not apply.
    if byte_offset % page_size:
        if case.call != "mmap2":
            return Expectation(False, errno="EINVAL", clause="mmap.ERRORS.EINVAL", sources=[MAN_EINVAL_MMAP])
        if config.misaligned_pgoff.value == "unreachable":
            raise OracleError(f"{config.path.name}: misaligned_pgoff is 'unreachable' "
                              f"({config.misaligned_pgoff.source}) but the page is {page_size} bytes")
        return Expectation(False, errno="EINVAL", clause="mmap2.ERRORS.EINVAL",
                           sources=[MAN_EINVAL_UNIT, config.misaligned_pgoff.source])
    expectation = _call_answer(config, properties, case, request, wanted, sources, byte_offset, page_size,
                               unit_sources)
    if not case.allowed:
        return expectation
    expectation.alternatives = [_call_answer(config, properties, case, request, answer, [case.allowed_source],
                                             byte_offset, page_size, unit_sources)
                                for answer in case.allowed if answer != wanted]
    # The manual page's unit is 4096 bytes on every ABI but ia64 (mmap2(2) VERSIONS), where
    # Linux's is the page (no configuration here is ia64): its EINVAL for offset * 4096 off
    # the page is an answer it allows too.
    if (case.call == "mmap2" and config.offset_unit.value == "page"
            and request.get("offset", 0) * 4096 % page_size and "EINVAL" not in case.allowed):
        expectation.alternatives.append(Expectation(False, errno="EINVAL", clause="mmap2.ERRORS.EINVAL",
                                                    sources=[MAN_EINVAL_UNIT, MAN_UNIT_IA64]))
    return expectation


def _file_call_answer(case: Case, wanted: str, sources: list[str]) -> Expectation:
    if wanted == "success":
        return Expectation(True, maps=False, clause=case.clause, sources=sources)
    return Expectation(False, errno=wanted, maps=False, clause=case.clause, sources=sources)


def _call_answer(config: Config, properties, case: Case, request: dict, wanted: str, sources: list[str],
                 byte_offset: int, page_size: int, unit_sources: list[str]) -> Expectation:
    """The expectation of one answer (an errno name, or one of CALL_EXPECTS) to a mapping call."""
    if wanted not in CALL_EXPECTS:
        return Expectation(False, errno=wanted, clause=case.clause, sources=sources)
    below = None
    if wanted == "mapping-below-top":
        below = fact_value(config, "task_size", properties)
        sources = sources + [config.row_facts["task_size"].source]
    # mmap2(2) VERSIONS says the unit is the page on ia64; such rows check that sentence.
    clause = ("mmap2.VERSIONS.ia64-unit" if case.call == "mmap2" and case.clause == "mmap2.DESCRIPTION.unit"
              and config.offset_unit.value == "page" else case.clause)
    # MAP_ANONYMOUS ignores fd (mmap(2)): such a mapping reads as zeros whatever fd is.
    anonymous = "ANONYMOUS" in request.get("flags", "").split("|") or request.get("fd", "none") == "none"
    file_mapping = request.get("fd") in ("file", "memfd_sealed") and not anonymous
    # memfd_sealed is one 4096-byte block with the marker of block 0 (helpers/PROTOCOL.md).
    contents = ({**request, "file_blocks": 1, "markers": [0]} if request.get("fd") == "memfd_sealed"
                else request)
    reads = expected_reads(contents, byte_offset, page_size) if file_mapping else []
    if any(want == "SIGBUS" for _, want in reads):
        sources = sources + [MAN_PAST_EOF]
    readback = None
    if "write_readback" in request:
        at = request["write_readback"]
        readback = [WRITE_MAGIC, at & 0xFFFFFFFF, at >> 32]
        sources = sources + [MAN_SHARED_WRITE]
    return Expectation(True, block=byte_offset // 4096 if file_mapping else None,
                       zero=anonymous, high=wanted == "high-mapping", below=below,
                       clause=clause, sources=sources + unit_sources, reads=reads, readback=readback)


def deviation(config: Config, page_size: int, case: Case, request: dict, answer: dict,
              expectation: Expectation, problems: list[str]) -> str | None:
    """The kind of deviation of an answer that is not the expected one, where the row states
    the answers the manual page allows: DIFFERS if it is one of the others (judged as that
    answer, data and encoding included), VIOLATES if it is none. None for the expected
    answer, and where the row states no such set (a known issue's kind is then its own)."""
    if not problems or expectation.alternatives is None:
        return None
    if any(not judge_call(config, page_size, case, request, answer, other)[1] for other in expectation.alternatives):
        return DIFFERS
    return VIOLATES


def expected_reads(request: dict, byte_offset: int, page_size: int) -> list[tuple[int, int | str]]:
    """What each read of a file mapping must see (helpers/PROTOCOL.md: the file has
    file_blocks 4096-byte blocks, a marker at each of `markers`, holes elsewhere; with
    truncate, that many blocks and the markers below them, from before the reads).

    Past the end of the file the bytes of the page that holds the end read as zero, and
    a page beyond it raises SIGBUS (mmap(2) NOTES and ERRORS): the first such read is the
    last one the child makes, so the list ends there."""
    blocks = request.get("file_blocks", 1)
    markers = set(request.get("markers", range(min(blocks, 4096))))
    if "truncate" in request:   # the size the file has by the time of the reads
        blocks = request["truncate"]
        markers = {m for m in markers if m < blocks}
    size = blocks * 4096
    pages_in_file = -(-size // page_size)
    reads = []
    for offset in request.get("reads", [0]):
        at = byte_offset + offset
        if at // page_size >= pages_in_file:
            reads.append((offset, "SIGBUS"))
            break
        block, within = divmod(at, 4096)
        if 0 < within < MARKER_BYTES:
            raise OracleError(f"a read at file offset {at:#x} would straddle the marker of block {block:#x}: "
                              f"read at a block's start or at least {MARKER_BYTES} bytes into it")
        reads.append((offset, block if block in markers and at < size and not within else "zero"))
    return reads


def decode_raw(config: Config, ret: int, flag: int) -> int | None:
    """The errno a raw result means under the ABI's convention, or None for success."""
    convention = config.error_convention.value
    if convention == "negative":
        bits = config.word_bits
        signed = ret - (1 << bits) if ret >> (bits - 1) else ret
        return -signed if -4095 <= signed <= -1 else None
    return ret if flag else None


def decode_marker(words: list[int]) -> int | str:
    if words[0] == MARKER_MAGIC:
        return words[1] | words[2] << 32
    return "zero" if not any(words) else "garbage:" + ",".join(f"{w:#x}" for w in words)


def observe_call(config: Config, case: Case, answer: dict) -> dict:
    """Normalise a helper answer into what the report shows as observed."""
    if answer.get("setup_error") is not None:
        return {"setup_error": answer["setup_error"]}
    bits = config.word_bits
    observed = {"ret": f"{answer['ret']:#x}"}
    if case.call in RAW_CALLS:
        observed["flag"] = answer.get("flag", 0)
        errno = decode_raw(config, answer["ret"], answer.get("flag", 0))
    else:
        failed = answer["ret"] == (1 << bits) - 1   # MAP_FAILED, (void *) -1
        errno = answer["errno"] if failed else None
    if errno is not None:
        observed.update(result="error", errno=config.errno.name_of(errno) or f"errno {errno}",
                        errno_number=errno)
    elif case.call in FILE_CALLS:
        observed["result"] = "success"
    else:
        observed["result"] = "mapped"
        if answer.get("reads"):
            observed["block"] = decode_marker(answer["reads"][0][1:])
            observed["blocks_read"] = [decode_marker(read[1:]) for read in answer["reads"]]
    if isinstance(answer.get("readback"), list):
        observed["readback"] = ",".join(f"{w:#x}" for w in answer["readback"])
    for key in ("signal", "signal_at", "setup_error", "err_name"):
        if answer.get(key) is not None:
            observed[key] = answer[key]
    return observed


def judge_call(config: Config, page_size: int, case: Case, request: dict, answer: dict,
               expectation: Expectation) -> tuple[dict, list[str]]:
    """Compare one answer with its expectation; returns (observed, problems)."""
    observed = observe_call(config, case, answer)
    if "setup_error" in observed:
        return observed, [f"the helper could not set the case up: {observed['setup_error']}"]
    problems = []
    sigbus_at = next((offset for offset, want in expectation.reads if want == "SIGBUS"), None)
    if observed.get("signal") is not None and not (
            expectation.success and observed.get("signal") == "SIGBUS" and observed.get("signal_at") == sigbus_at
            and sigbus_at is not None):
        problems.append(f"the helper died of {observed['signal']} while reading offset "
                        f"{observed.get('signal_at')}"
                        + (f" (SIGBUS was expected at offset {sigbus_at:#x})" if sigbus_at is not None else ""))
    if not expectation.success:
        if observed["result"] != "error":
            problems.append(f"expected {expectation.errno}, the call succeeded at {observed['ret']}")
        elif observed["errno"] != expectation.errno:
            problems.append(f"expected {expectation.errno}, got {observed['errno']}")
        problems += _encoding_problems(config, case, answer, observed)
        return observed, problems
    if not expectation.maps:
        if observed["result"] != "success":
            return observed, problems + [f"expected success, got {observed['errno']}"]
        if case.call == "extend" and answer["ret"] != EXTEND_BYTES:
            problems.append(f"the write of the last block wrote {answer['ret']} of its {EXTEND_BYTES} bytes")
        return observed, problems
    if observed["result"] != "mapped":
        return observed, problems + [f"expected a mapping, got {observed['errno']}"]
    address = answer["ret"]
    if address % page_size:
        problems.append(f"address {address:#x} is not aligned to the {page_size}-byte page")
    if "FIXED" in request.get("flags", "").split("|") and address != answer.get("addr_arg"):
        problems.append(f"MAP_FIXED asked for {answer.get('addr_arg', 0):#x}, got {address:#x}")
    if expectation.reads:
        answered = {read[0]: decode_marker(read[1:]) for read in answer.get("reads", [])}
        for offset, wanted in expectation.reads:
            if wanted == "SIGBUS":
                if offset in answered:
                    problems.append(f"expected SIGBUS at mapping offset {offset:#x} (past the page that holds "
                                    f"the end of the file), read {_shown(answered[offset])}")
                elif observed.get("signal") is None:
                    problems.append(f"expected SIGBUS at mapping offset {offset:#x}, the child did not die there")
                break
            got = answered.get(offset, "nothing")
            if got != wanted:
                mapped = (f"; the mapping holds file offset {(got - offset // 4096) * 4096:#x}"
                          if isinstance(got, int) else "")
                what = "zeros" if wanted == "zero" else f"file block {wanted:#x}"
                problems.append(f"expected {what} at mapping offset {offset:#x}, read {_shown(got)}{mapped}")
                break
    if expectation.readback is not None:
        back = answer.get("readback")
        if not isinstance(back, list):
            problems.append(f"the write through the mapping could not be read back: {back}")
        elif back != expectation.readback:
            got = decode_marker(back)
            held = (f"the file still holds the marker of block {got:#x}" if isinstance(got, int)
                    else f"read {got}")
            problems.append(f"the write at mapping offset 0 is not in the file at byte offset "
                            f"{request['write_readback']:#x}: {held}")
    if expectation.below is not None and address + request["len"] > expectation.below:
        problems.append(f"the mapping {address:#x}-{address + request['len']:#x} ends above {expectation.below:#x}, "
                        f"the top of a task's address space")
    if expectation.high and address < 1 << 31:
        problems.append(f"address {address:#x} is not above 2 GiB as the case arranged")
    if expectation.zero and observed.get("block") != "zero":
        problems.append(f"an anonymous mapping must read as zeros, read {observed.get('block')}")
    return observed, problems


def _shown(got) -> str:
    return got if isinstance(got, str) else hex(got)


def _encoding_problems(config: Config, case: Case, answer: dict, observed: dict) -> list[str]:
    """RETURN VALUE: -1 and errno through libc; the ABI's own convention through the raw stub."""
    if observed["result"] != "error":
        return []
    errno, bits = observed["errno_number"], config.word_bits
    problems = [] if 1 <= errno <= 4095 else [f"errno {errno} is outside 1..4095"]
    if case.call not in RAW_CALLS:
        return problems
    convention = config.error_convention.value
    if convention == "negative" and answer["ret"] != (1 << bits) - errno:
        problems.append(f"raw return {answer['ret']:#x} is not -{errno} in {bits} bits")
    if convention != "negative" and answer.get("flag") != 1:
        problems.append(f"the {convention} error flag is {answer.get('flag')}, expected 1")
    stub_view = answer.get("err_name")
    if stub_view != config.errno.name_of(errno):
        problems.append(f"the stub decoded the error as {stub_view}, the {convention} convention "
                        f"gives {config.errno.name_of(errno)}")
    return problems


def judge_probe(config: Config, properties, case: Case, answer: dict):
    """Self-checks: what the helper was compiled with and sees, against arches/ facts.

    Returns (clause, expected, observed, sources, problems)."""
    clause = case.clause
    if case.check == "mmap2-number":
        if not config.has_mmap2:
            clause = "mmap2.VERSIONS.no-x86-64"
        expected = {"mmap2_nr": config.mmap2_nr.value if config.has_mmap2 else None}
        observed = {"mmap2_nr": answer.get("mmap2_nr")}
        sources = [config.mmap2_nr.source]
    elif case.check == "page-size":
        # The session measured the page (AT_PAGESZ) and checked it against the ABI's
        # page sizes; libc's sysconf must report the same page.
        expected = {"auxv_pagesz_in": config.page_sizes.value}
        observed = {"auxv_pagesz_in": config.page_sizes.value if answer.get("auxv_pagesz") in config.page_sizes.value
                    else answer.get("auxv_pagesz"), "auxv_pagesz": answer.get("auxv_pagesz")}
        if answer.get("sysconf_pagesz") is not None:
            expected["sysconf_pagesz"] = answer.get("auxv_pagesz")
            observed["sysconf_pagesz"] = answer["sysconf_pagesz"]
        sources = [config.page_sizes.source, properties.sources["page_size"]]
    else:
        table, field_name = ((config.errno.errno, "errno") if case.check == "errno-numbers"
                             else (config.errno.signals, "signals"))
        expected = {name: fact.value for name, fact in table.items()}
        compiled = answer.get(field_name) or {}
        observed = {name: compiled.get(name) for name in table}
        sources = sorted({fact.source.rsplit(":", 1)[0] for fact in table.values()})
    problems = [f"{key}: expected {value!r}, the helper has {observed.get(key)!r}"
                for key, value in expected.items() if observed.get(key) != value]
    return clause, expected, observed, sources, problems


MAN_GLIBC_WRAPPER = ("mmap2(2) VERSIONS: on architectures where this system call is present, the "
                     "glibc mmap() wrapper function invokes this system call rather than mmap(2)")
_TRACED = re.compile(r"\b(mmap2|mmap)\((.*)\)\s+=")


def traced_maps(trace: str) -> list[tuple[str, str]]:
    """(name, last argument) of every mmap/mmap2 line a tracer printed."""
    return [(m.group(1), m.group(2).rsplit(",", 1)[-1].strip()) for m in map(_TRACED.search, trace.splitlines()) if m]


def judge_trace(config: Config, page_size: int, request: dict, trace: str, shows: str,
                wanted: bool | str = True):
    """Which system call libc made for the request, and with what offset argument.

    ``shows`` says how the tracer prints the last argument: "argument" (qemu -strace
    prints it raw) or "bytes" (strace scales mmap2's argument to a byte offset).
    ``wanted`` "no-syscall": libc must fail before making any mmap system call."""
    calls = traced_maps(trace)
    if wanted == "no-syscall":
        observed = {"syscalls": [f"{n}(...,{a})" for n, a in calls]}
        problems = [f"libc made {len(calls)} mmap system call(s); it must reject the offset itself"] if calls else []
        return {"syscalls": []}, observed, problems
    name = "mmap2" if config.has_mmap2 else "mmap"
    offset = request.get("offset", 0)
    argument = offset // config.unit_bytes(page_size) if config.has_mmap2 and shows == "argument" else offset
    expected = {"syscall": name, "offset_argument": argument}
    observed = {"syscalls": [f"{n}(...,{a})" for n, a in calls]}
    if len(calls) != 1:
        return expected, observed, [f"expected one mmap system call in the trace, found {len(calls)}: "
                                    f"{trace[-500:]!r}"]
    traced_name, traced_arg = calls[0]
    problems = [] if traced_name == name else [f"libc called {traced_name}, expected {name}"]
    try:
        value = int(traced_arg, 0)
    except ValueError:
        value = traced_arg
    if value != argument:
        problems.append(f"the offset argument was {traced_arg}, expected {argument:#x}")
    return expected, observed, problems
