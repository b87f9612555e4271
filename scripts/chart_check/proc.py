"""The one place for processes, ports, scratch folders and waiting.

`run` (a command to completion, output captured, with a timeout), `Child` (a long-running child:
its log, liveness and stop), `free_port`, `scratch_dir` (a temporary folder, kept on request) and
`poll` (retry until a condition holds, with a deadline: no fixed sleeps elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .report import CheckError

T = TypeVar("T")


def run(args: list, *, timeout: float = 60, input: str | None = None, env: dict | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs a command to completion with its output captured as text (subprocess.TimeoutExpired past timeout)."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, input=input,
                          env=env, cwd=cwd)


def minimal_env(**extra: str) -> dict[str, str]:
    """An environment with nothing from this process but PATH (no stray TOKEND_* variables)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def scratch_dir(keep: bool = False) -> Iterator[Path]:
    """A fresh temporary folder, removed afterwards unless keep (then its path is printed)."""
    d = Path(tempfile.mkdtemp(prefix="chart-check-"))
    try:
        yield d
    finally:
        if keep:
            print(f"        files kept in {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


def poll(attempt: Callable[[], tuple[bool, T]], budget: float, interval: float,
         failure: Callable[[T], str]) -> T:
    """Calls attempt() every interval seconds until it returns (True, value), then returns value; after
    budget seconds raises CheckError(failure(last value)). attempt runs at least once."""
    deadline = time.monotonic() + budget
    while True:
        done, value = attempt()
        if done:
            return value
        if time.monotonic() >= deadline:
            raise CheckError(failure(value))
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


class Child:
    """A long-running child process; its output goes to log (or nowhere). stop() ends it: SIGTERM and up to
    grace seconds, then SIGKILL (grace 0: SIGKILL at once)."""

    def __init__(self, args: list, log: Path | None = None, grace: float = 0, **popen: object) -> None:
        self.log = log
        self.grace = grace
        self.logf = open(log, "wb") if log else None
        out = self.logf or subprocess.DEVNULL
        self.proc = subprocess.Popen([str(a) for a in args], stdout=out, stderr=subprocess.STDOUT if log else out,
                                     **popen)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 25) -> str:
        if not self.log:
            return ""
        self.logf.flush()
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.grace:
                self.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(self.grace)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        if self.logf:
            self.logf.close()
