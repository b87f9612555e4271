"""PASS/FAIL bookkeeping shared by the Python interop checks
(scripts/interop_token_exchange.py, scripts/interop_private_key_jwt.py,
scripts/feed_python_check.py): one line per check, a summary line, and the
exit status."""


class Stop(Exception):
    """A check that later steps depend on failed."""


class Checks:
    def __init__(self, prefix=""):
        self.prefix = prefix
        self.passed = 0
        self.failed = 0

    def check(self, ok, name, detail=""):
        """Prints PASS/FAIL for `name`; returns `ok`."""
        if ok:
            self.passed += 1
            print(f"PASS  {self.prefix}{name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL  {self.prefix}{name}" + (f": {detail}" if detail else ""), flush=True)
        return bool(ok)

    def require(self, ok, name, detail=""):
        """`check`, then stop the run (raise Stop) when it failed."""
        if not self.check(ok, name, detail):
            raise Stop(name)

    def summary(self):
        """Prints "N passed, N failed"; the exit status (1 on any failure or no check at all)."""
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 and self.passed > 0 else 1
