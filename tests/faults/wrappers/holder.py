"""A process that holds a helper session, for the tests that kill it.

    holder.py HELPER SCRATCH_KIND LOG OUT

It opens a HelperSession whose command is HELPER behind inject.py --sleeper (so the
session's process has a child, the helper, and a sleeper that only a group kill
ends), makes one exchange, writes {"pid", "tag", "guardian", "workdir"} to OUT and
then waits to be killed.
"""
import json
import os
import sys
import time
from pathlib import Path

from mmap2conf import procs
from mmap2conf.protocol import HelperSession

INJECT = Path(__file__).resolve().parent / "inject.py"


def main() -> int:
    helper, kind, log, out = sys.argv[1:]
    session = HelperSession(lambda workdir: [sys.executable, str(INJECT), "--fault", "none", "--log", log,
                                             "--sleeper", "--", helper, str(workdir)],
                            scratch_kind=None if kind == "default" else kind)
    session.request({"op": "probe", "id": "holder"})
    Path(out + ".tmp").write_text(json.dumps({"pid": os.getpid(), "tag": procs.owner(),
                                              "guardian": procs.guardian().pid, "workdir": str(session.workdir),
                                              "session_pid": session.process.pid}))
    os.replace(out + ".tmp", out)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    sys.exit(main())
