"""A wrapper that puts one fault into a real helper's conversation.

    inject.py --fault KIND [--match REGEX] [--once FILE] [--log FILE] [--sleeper] -- COMMAND...

It starts COMMAND as its own child (so COMMAND is a grandchild of whoever started
the wrapper), relays each request line to it and each answer line back, and at the
first request whose line matches REGEX (default: any) it injects KIND:

    stray-before  a line that is not JSON, then the answer
    stray-after   the answer, then a line that is not JSON
    duplicate     the answer twice
    other-id      an answer for another id, then the answer
    escape        terminal control (ESC c, CSI, OSC, BEL) on a line, then the answer
    eperm         the answer of a call made to fail with EPERM, as i386's raw helper
                  gives it (ret -1): a well-formed answer with the wrong verdict
    hang          no answer: it stops relaying and sleeps until it is killed
    exit          it exits with status 3 without answering
    none          nothing: a plain relay

--once FILE: only the process that creates FILE first injects (one fault per run,
however many helper processes the run starts). --log FILE: appends "pid PID CHILD"
and, when the fault fires, "fired KIND REQUEST-ID". --sleeper: also starts a child
`sleep 600`, which only a kill of the whole process group ends.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault", required=True)
    parser.add_argument("--match", default="")
    parser.add_argument("--once")
    parser.add_argument("--log")
    parser.add_argument("--sleeper", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    sleeper = subprocess.Popen(["sleep", "600"]) if args.sleeper else None

    def log(text):
        if args.log:
            with open(args.log, "a") as f:
                f.write(text + "\n")

    log(f"pid {os.getpid()} {child.pid}" + (f" {sleeper.pid}" if sleeper else ""))
    out = sys.stdout.buffer
    fired = False
    for request in sys.stdin.buffer:
        child.stdin.write(request)
        child.stdin.flush()
        fire = (args.fault != "none" and not fired
                and re.search(args.match.encode(), request) is not None)
        if fire and args.once:
            try:
                os.close(os.open(args.once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                fire = False
        if fire:
            fired = True
            log(f"fired {args.fault} {json.loads(request).get('id')}")
            if args.fault == "hang":
                while True:
                    time.sleep(60)
            if args.fault == "exit":
                return 3
        answer = child.stdout.readline()
        if not answer:
            break
        if fire and args.fault == "stray-before":
            out.write(b"this line is not JSON\n")
        elif fire and args.fault == "other-id":
            out.write(json.dumps({**json.loads(answer), "id": "someone-else#0"}).encode() + b"\n")
        elif fire and args.fault == "escape":
            out.write(b"\x1bc\x1b[2J\x1b]0;title\x07\x07console says hello\x1b[0m\n")
        elif fire and args.fault == "eperm":
            answer = json.dumps({**json.loads(answer), "ret": 2**32 - 1, "err_name": "EPERM",
                                 "reads": []}).encode() + b"\n"
        out.write(answer)
        if fire and args.fault == "duplicate":
            out.write(answer)
        elif fire and args.fault == "stray-after":
            out.write(b"this line is not JSON either\n")
        out.flush()
    child.stdin.close()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
