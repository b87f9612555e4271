#!/usr/bin/env python3
"""Checks tokend's documentation the way a newcomer uses it. Standard library only.

  python3 scripts/docs_check.py links            every relative link resolves (files and #anchors)
  python3 scripts/docs_check.py run [PAGE ...]   runs every runnable block, page by page
  python3 scripts/docs_check.py list             lists the runnable blocks

Pages: README.md, docs/**/*.md and helm/tokend/README.md (paths relative to the repository root, which is
the parent folder of this script's folder, so a copy of the repository checks itself).

links: every link or image in Markdown (`[text](target)`, `![alt](target)`, `[id]: target`) or HTML
(`href`, `src`) whose target is not an absolute URL must name an existing file or folder of the repository;
a `#fragment` on a Markdown file (or on the page itself) must name one of its headings, slugged by GitHub's
rules (lower case, punctuation other than `-` and `_` dropped, each space a `-`, `-1`, `-2`... for
repeated headings), or an explicit `<a id=...>`/`<a name=...>`. Code blocks and code spans are skipped.

run: a fenced ```bash block is runnable when the line just before its fence is `<!-- runnable -->`
(optionally `<!-- runnable timeout=SECONDS -->`; default 120 s per block). The blocks of one page run in
order in one fresh `bash -euo pipefail`, working directory the repository root, so variables set by a block
are seen by the next ones (`TOKEND_PID` from a quick start, say). The run stops at the first block that
exits non-zero or outlives its timeout, and names the page, the block and its line. Whatever a page left
running is killed when the page ends, passed or failed: its whole process group, then any process that
inherited this run's marker variable (so daemonised children are found too). TOKEND_* and RUST_LOG
variables of the calling environment are not passed on, so the blocks see what a fresh shell sees.
README.md runs first (its quick start builds ./target/release/tokend for the later pages).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BLOCK_TIMEOUT = 120
RUNNABLE = re.compile(r"^\s*<!--\s*runnable(?:\s+timeout=(\d+))?\s*-->\s*$")
FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)")
# Ports the documented servers use; a page is not started while something else holds one of them.
DOC_PORTS = (8080, 8081, 50051, 50052, 9090, 6390)


def pages() -> list[Path]:
    """The documentation pages, README.md first."""
    found = [ROOT / "README.md"]
    found += sorted((ROOT / "docs").rglob("*.md"))
    chart = ROOT / "helm" / "tokend" / "README.md"
    if chart.exists():
        found.append(chart)
    return [p for p in found if p.exists()]


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


# ---------------------------------------------------------------------------------------------------------
# Markdown scanning


@dataclass
class Block:
    page: Path
    index: int  # 1-based among the page's runnable blocks
    line: int  # line of the opening fence, 1-based
    timeout: int
    text: str


def split_blocks(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, str, str | None]]]:
    """Returns (prose lines, fenced blocks). Prose lines are (line number, text) outside fences; blocks are
    (fence line number, info string, body, the line before the fence)."""
    prose: list[tuple[int, str]] = []
    blocks: list[tuple[int, str, str, str | None]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3)
        before = lines[i - 1] if i > 0 else None
        start = i
        body = []
        i += 1
        closing = re.compile(r"^ {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$")
        while i < len(lines) and not closing.match(lines[i]):
            line = lines[i]
            # Content indented like the fence loses that indentation (list items).
            if indent and line.startswith(indent):
                line = line[len(indent):]
            body.append(line)
            i += 1
        i += 1  # the closing fence (or the end of the file)
        blocks.append((start + 1, info, "\n".join(body) + "\n", before))
    return prose, blocks


def runnable_blocks(page: Path) -> tuple[list[Block], list[str]]:
    """The page's runnable blocks, and problems with runnable markers."""
    text = page.read_text(encoding="utf-8")
    _, blocks = split_blocks(text)
    out: list[Block] = []
    problems: list[str] = []
    for line, info, body, before in blocks:
        m = RUNNABLE.match(before or "")
        if not m:
            continue
        if info != "bash":
            problems.append(f"{rel(page)}:{line}: a runnable block must be a ```bash block, not ```{info}")
            continue
        timeout = int(m.group(1)) if m.group(1) else DEFAULT_BLOCK_TIMEOUT
        out.append(Block(page, len(out) + 1, line, timeout, body))
    # A marker that is not followed by a fence is a mistake too.
    lines = text.split("\n")
    fence_lines = {b[0] for b in blocks}
    for n, l in enumerate(lines, start=1):
        if RUNNABLE.match(l) and (n + 1) not in fence_lines:
            problems.append(f"{rel(page)}:{n}: <!-- runnable --> must be the line just before a ```bash fence")
    return out, problems


# ---------------------------------------------------------------------------------------------------------
# Links


def mask_code_spans(line: str) -> str:
    """Replaces the content of inline code spans (and their backticks) with spaces, keeping positions."""
    out = []
    i = 0
    while i < len(line):
        if line[i] == "`":
            j = i
            while j < len(line) and line[j] == "`":
                j += 1
            ticks = line[i:j]
            end = line.find(ticks, j)
            # The closing run must have exactly as many backticks.
            while end != -1 and end + len(ticks) < len(line) and line[end + len(ticks)] == "`":
                end = line.find(ticks, end + len(ticks) + 1)
            if end == -1:
                out.append(line[i:j])
                i = j
                continue
            out.append(" " * (end + len(ticks) - i))
            i = end + len(ticks)
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


INLINE_LINK = re.compile(
    r"!?\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(?P<target><[^>]*>|[^)\s]*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
REF_DEF = re.compile(r"^ {0,3}\[(?P<id>[^\]]+)\]:\s*(?P<target><[^>]*>|\S+)")
HTML_ATTR = re.compile(r"<(?:a|img|source)\b[^>]*?\b(?:href|src)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.I)
HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:id|name)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.I)
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def heading_text(raw: str) -> str:
    """The text GitHub renders for a heading's inline Markdown (what it slugs)."""
    t = raw.strip()
    t = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", t)  # images -> alt text
    t = re.sub(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", t)  # links -> text
    t = re.sub(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\[[^\]]*\]", r"\1", t)  # reference links -> text
    t = re.sub(r"<[^>]+>", "", t)  # inline HTML tags
    t = t.replace("`", "")
    t = re.sub(r"(\*\*|__)(.+?)\1", r"\2", t)
    t = re.sub(r"(?<![\w*])([*_])(?!\s)(.+?)(?<!\s)\1(?![\w*])", r"\2", t)
    return html.unescape(t)


def github_slug(text: str) -> str:
    """github-slugger: lower case; drop punctuation and symbols except `-` and `_`; each space becomes `-`."""
    out = []
    for ch in text.lower():
        if ch in "-_ " or ch.isalnum():
            out.append("-" if ch == " " else ch)
        elif ord(ch) < 128:
            continue
        elif unicodedata.category(ch)[0] in "LNM":
            out.append(ch)
    return "".join(out)


def anchors_of(page: Path, cache: dict[Path, set[str]]) -> set[str]:
    if page in cache:
        return cache[page]
    prose, _ = split_blocks(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found: set[str] = set()

    def add(slug: str) -> None:
        base = slug
        if base in seen:
            n = seen[base]
            while f"{base}-{n}" in seen:
                n += 1
            seen[base] = n + 1
            slug = f"{base}-{n}"
            seen[slug] = 1
        else:
            seen[base] = 1
        found.add(slug)

    prev: tuple[int, str] | None = None
    for n, line in prose:
        m = ATX.match(line)
        if m:
            add(github_slug(heading_text(m.group(2) or "")))
            prev = None
            continue
        s = SETEXT.match(line)
        if s and prev is not None and prev[0] == n - 1 and prev[1].strip() and not prev[1].lstrip().startswith(("|", ">", "-", "*", "<!--")):
            add(github_slug(heading_text(prev[1])))
            prev = None
            continue
        for m in HTML_ANCHOR.finditer(line):
            found.add(m.group(1) if m.group(1) is not None else m.group(2))
        prev = (n, line)
    cache[page] = found
    return found


def link_targets(page: Path) -> list[tuple[int, str]]:
    prose, _ = split_blocks(page.read_text(encoding="utf-8"))
    out = []
    in_comment = False
    for n, line in prose:
        if in_comment:
            if "-->" in line:
                in_comment = False
            continue
        if "<!--" in line and "-->" not in line.split("<!--", 1)[1]:
            in_comment = True
            line = line.split("<!--", 1)[0]
        line = re.sub(r"<!--.*?-->", "", line)
        masked = mask_code_spans(line)
        m = REF_DEF.match(masked)
        if m:
            out.append((n, m.group("target")))
            continue
        for m in INLINE_LINK.finditer(masked):
            out.append((n, m.group("target")))
        for m in HTML_ATTR.finditer(masked):
            out.append((n, m.group(1) if m.group(1) is not None else m.group(2)))
    return [(n, t[1:-1] if t.startswith("<") and t.endswith(">") else t) for n, t in out]


def check_links() -> int:
    problems: list[str] = []
    cache: dict[Path, set[str]] = {}
    checked = 0
    for page in pages():
        for n, target in link_targets(page):
            where = f"{rel(page)}:{n}: link {target!r}"
            if not target:
                problems.append(f"{where}: empty target")
                continue
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # absolute URL (https:, mailto:, ...): not checked offline
            checked += 1
            path_part, _, fragment = target.partition("#")
            path_part = urllib.parse.unquote(path_part.split("?", 1)[0])
            if path_part:
                base = ROOT if path_part.startswith("/") else page.parent
                dest = (base / path_part.lstrip("/")).resolve()
                try:
                    dest.relative_to(ROOT)
                except ValueError:
                    problems.append(f"{where}: points outside the repository")
                    continue
                if not dest.exists():
                    problems.append(f"{where}: {rel(dest) if dest.is_relative_to(ROOT) else dest} does not exist")
                    continue
            else:
                dest = page
            if fragment:
                if dest.is_dir() or dest.suffix.lower() not in (".md", ".markdown"):
                    continue  # anchors into source files (#L10) are GitHub's business
                fragment = urllib.parse.unquote(fragment)
                if fragment not in anchors_of(dest, cache) and fragment.lower() not in anchors_of(dest, cache):
                    problems.append(f"{where}: no heading #{fragment} in {rel(dest)}")
    for page in pages():
        problems += runnable_blocks(page)[1]
    for p in problems:
        print(p)
    if problems:
        print(f"docs_check links: {len(problems)} problem(s) in {len(pages())} pages")
        return 1
    print(f"docs_check links: {checked} relative links in {len(pages())} pages resolve")
    return 0


# ---------------------------------------------------------------------------------------------------------
# Running blocks

PREAMBLE = """\
__docs_check_block() {
  printf '%s\\n' "$1" > "$DOCS_CHECK_STATUS"
  printf '\\n--- docs_check: %s block %s (line %s)\\n' "$DOCS_CHECK_PAGE" "$1" "$2" >&2
}
"""


def port_in_use(port: int) -> bool:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
    finally:
        s.close()


def marked_processes(token: str) -> list[tuple[int, str]]:
    """Processes whose environment holds DOCS_CHECK_RUN=token (descendants of a page, daemonised or not)."""
    needle = f"DOCS_CHECK_RUN={token}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            found.append((int(d.name), cmd))
    return found


def kill_leftovers(pgid: int, token: str) -> list[str]:
    """Ends everything the page started. Returns the command lines of what was still running."""
    left = [cmd for _, cmd in marked_processes(token)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        for pid, _ in marked_processes(token):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and marked_processes(token):
            time.sleep(0.1)
        if not marked_processes(token):
            break
    return left


def run_page(page: Path, blocks: list[Block]) -> tuple[bool, str]:
    busy = [p for p in DOC_PORTS if port_in_use(p)]
    if busy:
        return False, (f"{rel(page)}: not started: something outside docs_check listens on 127.0.0.1 port(s) "
                       f"{', '.join(map(str, busy))}, which the documented servers use")
    token = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="docs_check.") as tmp:
        status = Path(tmp) / "status"
        status.write_text("0\n")
        script = [PREAMBLE]
        for b in blocks:
            script.append(f"__docs_check_block {b.index} {b.line}\n")
            script.append(b.text)
            script.append("\n")
        script.append('printf "done\\n" > "$DOCS_CHECK_STATUS"\n')
        path = Path(tmp) / "page.sh"
        path.write_text("".join(script))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEND_") and k != "RUST_LOG"}
        env.update(DOCS_CHECK_RUN=token, DOCS_CHECK_STATUS=str(status), DOCS_CHECK_PAGE=rel(page))
        started = time.monotonic()
        proc = subprocess.Popen(["bash", "-euo", "pipefail", str(path)], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        current, block_start, verdict = "0", time.monotonic(), None
        try:
            while True:
                code = proc.poll()
                now = status.read_text().strip() or current
                if now != current:
                    current, block_start = now, time.monotonic()
                if code is not None:
                    if code != 0:
                        verdict = f"exit status {code}"
                    break
                b = blocks[int(current) - 1] if current.isdigit() and int(current) >= 1 else None
                if b is not None and time.monotonic() - block_start > b.timeout:
                    verdict = f"still running after its timeout of {b.timeout} s"
                    break
                time.sleep(0.1)
        finally:
            left = kill_leftovers(proc.pid, token)
            proc.wait()
        elapsed = time.monotonic() - started
        if left:
            print(f"docs_check: {rel(page)}: stopped what the page left running: " + "; ".join(left[:5]),
                  file=sys.stderr)
        if verdict is None and left:
            # Every section stops what it starts (kill $TOKEND_PID; wait $TOKEND_PID): a page that does
            # not would leave a newcomer's ports taken.
            return False, (f"FAILED {rel(page)}: its blocks passed but left processes running "
                           f"({'; '.join(left[:3])}); stop them in the page (kill $PID; wait $PID)")
        if verdict is None:
            return True, f"{rel(page)}: {len(blocks)} block(s) passed in {elapsed:.1f} s"
        b = blocks[int(current) - 1] if current.isdigit() and int(current) >= 1 else None
        which = f"block {b.index} (line {b.line})" if b else "before its first block"
        hint = ""
        if b and "./target/release/tokend" in b.text and not (ROOT / "target" / "release" / "tokend").exists():
            hint = " (./target/release/tokend does not exist: run README.md first, its quick start builds it)"
        return False, f"FAILED {rel(page)} {which}: {verdict}{hint}"


def select(names: list[str]) -> list[Path]:
    every = pages()
    if not names:
        return every
    chosen = []
    for n in names:
        p = (Path.cwd() / n).resolve()
        if p not in every:
            p = (ROOT / n).resolve()
        if p not in every:
            sys.exit(f"docs_check: {n} is not one of the documentation pages")
        chosen.append(p)
    return chosen


def run(names: list[str]) -> int:
    todo = []
    problems = []
    for page in select(names):
        blocks, bad = runnable_blocks(page)
        problems += bad
        if blocks:
            todo.append((page, blocks))
    if problems:
        print("\n".join(problems))
        return 1
    started = time.monotonic()
    results = []
    for page, blocks in todo:
        print(f"\n=== docs_check run: {rel(page)} ({len(blocks)} runnable block(s))", flush=True)
        ok, msg = run_page(page, blocks)
        results.append(msg)
        print(f"=== {msg}", flush=True)
        if not ok:
            print(f"docs_check run: {msg}", file=sys.stderr)
            return 1
    total = sum(len(b) for _, b in todo)
    print(f"\ndocs_check run: {total} runnable blocks on {len(todo)} pages passed in "
          f"{time.monotonic() - started:.1f} s")
    for m in results:
        print(f"  {m}")
    return 0


def list_blocks() -> int:
    for page in pages():
        blocks, bad = runnable_blocks(page)
        for p in bad:
            print(p)
        for b in blocks:
            first = next((l for l in b.text.splitlines() if l.strip() and not l.startswith("#")), "")
            print(f"{rel(page)}: block {b.index} (line {b.line}, timeout {b.timeout} s): {first[:80]}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("links", help="check relative links and anchors")
    r = sub.add_parser("run", help="run the runnable blocks")
    r.add_argument("pages", nargs="*", help="pages to run (default: all, README.md first)")
    sub.add_parser("list", help="list the runnable blocks")
    a = ap.parse_args()
    if a.cmd == "links":
        return check_links()
    if a.cmd == "run":
        return run(a.pages)
    return list_blocks()


if __name__ == "__main__":
    sys.exit(main())
