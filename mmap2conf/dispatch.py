"""One guest for every helper of a kernel (helpers/PROTOCOL.md, init mode, "Dispatch").

A kernel system boots once per run, not once per configuration, flavour and
scratch kind: its initramfs holds every helper the run needs from it, and its
init (a helper too, started with MMAP2_INIT=dispatch) starts the one each
session asks for on the console. A session's requests are answered by its own
helper only: before them it ends the helper on the console (the tty's
end-of-file) and has init start its own, and init takes nothing but that.
"""
from __future__ import annotations

from pathlib import Path

from . import kernels
from .protocol import HelperSession, ProtocolError


class Guest:
    """One process (a guest kernel) that serves ``helpers``, the first as its init."""

    def __init__(self, command_for, console, helpers: list[Path]):
        self.paths = {helper: kernels.guest_path(index) for index, helper in enumerate(helpers)}
        self.session = HelperSession(command_for, console=console)
        self.current: tuple[str, bool] | None = None   # the helper on the console, and its scratch
        self.generation = 0                              # session.starts when it was started
        self.unbootable: ProtocolError | None = None     # a guest that did not boot is not booted again

    def serve(self, helper: Path, noexec: bool, label: str) -> "Served":
        return Served(self, self.paths[helper], noexec, label)

    def select(self, served: "Served") -> None:
        """Put ``served``'s helper on the console, restarting the guest if it died."""
        if self.unbootable is not None:
            raise ProtocolError(str(self.unbootable), self.unbootable.kind)
        wanted, session = (served.path, served.noexec), self.session
        if self._helper_on_console():
            if self.current == wanted:
                return
            session.end_input()      # the helper on the console exits; init reads again
        self.current = None
        try:
            session.request({"op": "exec", "id": "exec", "path": served.path, "noexec": int(served.noexec)})
        except ProtocolError as exc:
            if exc.kind == "rejected":   # the kernel cannot execute that helper (ENOEXEC)
                raise ProtocolError(f"{served.path}: {exc}", "cannot-start") from None
            if exc.kind == "not-ready":
                self.unbootable = exc
            raise
        self.current, self.generation = wanted, session.starts

    def close(self) -> None:
        # The helper on the console takes one end of file and init the next, and powers the
        # guest off: without the first, the session's close waits its whole timeout for that.
        if self._helper_on_console() and not self.session.in_exchange:
            self.session.end_input()
        self.session.close()

    def _helper_on_console(self) -> bool:
        """A helper that init started is reading the console (in this start of the guest)."""
        return self.current is not None and self.session.alive() and self.session.starts == self.generation


class Served:
    """One helper inside a Guest, with the part of HelperSession's interface the engine uses."""

    def __init__(self, guest: Guest, path: str, noexec: bool, label: str):
        self.guest, self.path, self.noexec, self.label = guest, path, noexec, label
        self.console = guest.session.console

    @property
    def starts(self) -> int:
        return self.guest.session.starts

    @property
    def launch(self) -> int:
        return self.guest.session.launch

    @property
    def guest_start(self) -> dict | None:
        return self.guest.session.guest_start

    def request(self, message: dict) -> dict:
        self.guest.select(self)
        return self.guest.session.request(message)

    def stderr_size(self) -> int:
        return self.guest.session.stderr_size()

    def stderr_since(self, mark: int, until, wait: float = 2.0) -> str:
        return self.guest.session.stderr_since(mark, until, wait)

    def close(self) -> None:
        """The guest ends with the engine's run, not with one of its sessions."""
