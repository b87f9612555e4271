#!/usr/bin/env python3
"""Builds tokend from exactly the context the container image build gets, without Docker.

No container registry (so no base image) is reachable here, so this reproduces the builder stage
instead: it lays out the files of this checkout that `.dockerignore` lets into the build context
(as tracked by git, so a clean clone and a working tree give the same answer), copies what the
builder stage's COPY instructions copy into a fresh folder, and runs the builder stage's own cargo
command there. A path the build needs but the Dockerfile or .dockerignore leaves out fails it, as
it would fail `docker build` (this is how the `[[bench]] hot_paths` breakage is caught).

Then it checks that the check can fail: each COPY of the builder stage is dropped in turn and the
same cargo command must then fail.

  python3 scripts/docker-context-check.py            the positive build, then the negative ones
  CARGO_TARGET_DIR=...                               shared with the repository's build (default target/)
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def dockerignore_patterns() -> list[tuple[bool, str]]:
    """(exclude?, pattern) in file order; `!` lines re-include."""
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pat = line[1:] if keep else line
        out.append((not keep, pat.strip().strip("/")))
    return out


def matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent folders. `**` spans folders."""
    parts = path.split("/")
    regex = re.compile(
        "^"
        + "".join(
            ".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?" else re.escape(tok)
            for tok in re.split(r"(\*\*|\*|\?)", pattern)
        ).replace(".*/", "(?:.*/)?")
        + "$"
    )
    return any(regex.match("/".join(parts[:i])) for i in range(1, len(parts) + 1))


def context_files() -> list[str]:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    patterns = dockerignore_patterns()
    kept = []
    for f in filter(None, tracked):
        if not (ROOT / f).is_file():
            continue
        excluded = False
        for exclude, pat in patterns:
            if matches(pat, f):
                excluded = exclude
        if not excluded:
            kept.append(f)
    return kept


def builder_stage() -> tuple[str, list[tuple[str, str]], list[str]]:
    """The builder stage's WORKDIR, its COPY (source, destination) pairs and its cargo command."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages = re.split(r"(?m)^FROM\s", text)
    builder = next(s for s in stages[1:] if re.match(r"\S+\s+AS\s+builder", s, re.I))
    workdir = re.search(r"(?m)^WORKDIR\s+(\S+)", builder).group(1)
    copies = []
    for m in re.finditer(r"(?m)^COPY\s+(?!--from)(.+)$", builder):
        args = shlex.split(m.group(1))
        *srcs, dest = args
        for src in srcs:
            copies.append((src, dest))
    run = re.search(r"(?m)^RUN\s+(.*)$", builder).group(1)
    cargo = re.search(r"\bcargo\s[^&;]*", run).group(0).split()
    return workdir, copies, cargo


def lay_out(files: list[str], copies: list[tuple[str, str]], workdir: str, into: Path) -> None:
    for src, dest in copies:
        dest_dir = into / Path(dest if dest.startswith("/") else f"{workdir}/{dest}").relative_to(workdir)
        chosen = [f for f in files if f == src or f.startswith(src.rstrip("/") + "/")]
        for f in chosen:
            if f == src:
                target = dest_dir / Path(f).name if dest.endswith("/") else dest_dir
            else:
                target = dest_dir / Path(f).relative_to(src.rstrip("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, target)


def build(into: Path, cargo: list[str], quiet: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", str(ROOT / "target"))
    return subprocess.run(
        cargo, cwd=into, env=env, text=True,
        stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None,
    )


def main() -> int:
    files = context_files()
    workdir, copies, cargo = builder_stage()
    print(f"docker-context-check: {len(files)} files in the context; COPY {[s for s, _ in copies]}; {' '.join(cargo)}")
    with tempfile.TemporaryDirectory(prefix="tokend-docker-context-") as d:
        lay_out(files, copies, workdir, Path(d))
        r = build(Path(d), cargo, quiet=False)
        if r.returncode != 0:
            print("docker-context-check: FAILED: the image's cargo command fails on the image's build context", file=sys.stderr)
            return 1
    failures = 0
    for i, (src, _) in enumerate(copies):
        with tempfile.TemporaryDirectory(prefix="tokend-docker-context-") as d:
            lay_out(files, copies[:i] + copies[i + 1:], workdir, Path(d))
            r = build(Path(d), cargo, quiet=True)
            verdict = "fails, as it must" if r.returncode != 0 else "STILL BUILDS: the check cannot see it missing"
            print(f"docker-context-check: without COPY {src}: {verdict}")
            failures += r.returncode == 0
    if failures:
        return 1
    print("docker-context-check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
