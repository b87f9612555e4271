"""Reporting: one line per check (ok / FAIL / SKIP), notes, and the closing summary.

Every check runs inside `R.check(name)`; an exception fails that check only. `expect` raises a
CheckError (a message meant for people), `Skip` marks a check as skipped with a reason.
"""

from __future__ import annotations

import contextlib
import time
import traceback


class CheckError(Exception):
    """A failed expectation with a message meant for people."""


class Skip(Exception):
    """Raised inside a check to report it as skipped (the message says why)."""


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckError(msg)


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


class Report:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str]] = []
        self.notes: list[str] = []

    @contextlib.contextmanager
    def check(self, name: str):
        """Runs the block as one check: an exception (AssertionError or any other) fails it."""
        t0 = time.monotonic()
        try:
            yield
        except Skip as s:
            self.skipped.append((name, str(s)))
            print(f"  SKIP  {name}: {s}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal
            msg = str(e) or e.__class__.__name__
            if not isinstance(e, (AssertionError, CheckError)):
                msg = f"{e.__class__.__name__}: {msg}\n{traceback.format_exc(limit=3)}"
            self.failed.append((name, msg))
            print(f"  FAIL  {name}\n        " + msg.replace("\n", "\n        "), flush=True)
        else:
            self.passed.append(name)
            print(f"  ok    {name} ({time.monotonic() - t0:.1f}s)", flush=True)

    def ok(self, name: str) -> bool:
        """Whether the check of that name ran and passed (checks that depend on it are left out otherwise)."""
        return name in self.passed

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        print(f"  NOTE  {msg}", flush=True)

    def summary(self) -> int:
        """Prints the summary; the exit code: 1 on any failure, or when nothing ran at all."""
        print("\n== summary")
        for n, why in self.skipped:
            print(f"  skipped: {n} ({why})")
        for n in self.notes:
            print(f"  note: {n}")
        for n, why in self.failed:
            print(f"  FAILED: {n}: {why.splitlines()[0] if why else ''}")
        print(f"chart-check: {len(self.passed)} passed, {len(self.failed)} failed"
              + (f", {len(self.skipped)} skipped" if self.skipped else ""))
        return 1 if self.failed or not (self.passed or self.failed) else 0


R = Report()
