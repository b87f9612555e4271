#!/usr/bin/env python3
"""Attributes the samples of a `perf record --call-graph dwarf` profile of
tokend to components (docs/bench/profiles.md, issue 21).

    perf record -F 999 -g --call-graph dwarf,16384 -p PID -o w.data -- sleep 4
    python3 scripts/perf_attribution.py w.data                 # components, leaf frames, tokend frames
    python3 scripts/perf_attribution.py w.data --under is_revoked   # what runs beneath a function

Each sample goes to one component, from its leaf upwards: any aws-lc frame
is crypto; a kernel leaf is "kernel via" the libc call that entered the
kernel; a mimalloc leaf is the allocator; otherwise the first frame that
belongs to a known crate or tokend module. Standard library only (runs
`perf script`)."""

import argparse
import collections
import re
import subprocess

CRATES = [
    ("hpack", "h2 (HPACK)"), ("h2::", "h2"), ("hyper_util", "hyper"), ("hyper::", "hyper"),
    ("tonic::", "tonic"), ("tonic_health", "tonic"), ("prost", "protobuf"),
    ("serde_json", "JSON (serde_json)"), ("axum", "axum"), ("tower", "tower"),
    ("tokend::transport::access", "tokend access layer"),
    ("tokend::transport::budget", "tokend access layer"),
    ("tokend::transport::http", "tokend HTTP handlers"),
    ("tokend::transport::grpc", "tokend gRPC handlers"),
    ("tokend_token", "tokend token (JWT)"), ("tokend_core::store", "tokend store"),
    ("tokend_core", "tokend core"), ("tokend::", "tokend other"),
    ("tracing", "tracing"), ("metrics", "metrics"), ("tokio::", "tokio runtime"),
    ("mio::", "tokio runtime"),
]
ALLOC = re.compile(r"(_?mi_|malloc|free|__rust_alloc|__rust_dealloc|realloc)")


def stacks(data):
    """Each sample's frames, leaf first; kernel frames end in " [k]"."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    cur = []
    for line in out.split("\n"):
        parts = line.strip().split(None, 1)
        if not parts:
            if cur:
                yield cur
            cur = []
            continue
        if len(parts) < 2:
            continue
        sym = parts[1]
        if "kernel.kallsyms" in sym:
            cur.append(re.sub(r"\s*\(\[kernel.kallsyms\]\)", "", sym) + " [k]")
        else:
            cur.append(re.sub(r"\s*\(/[^)]*\)\s*$", "", sym))
    if cur:
        yield cur


def crate_of(frames):
    for s in frames:
        for k, v in CRATES:
            if k in s:
                return v
    return None


def component(st):
    leaf = st[0]
    if any("aws_lc" in s or "ecp_nistz" in s for s in st):
        return "crypto (aws-lc)"
    if leaf.endswith("[k]"):
        user = [s for s in st if not s.endswith("[k]")]
        return "kernel via " + re.sub(r"\s*\(.*$", "", user[0] if user else "?")[:40]
    if ALLOC.match(leaf):
        return "allocator (mimalloc)"
    if "memmove" in leaf or "memcpy" in leaf or "memset" in leaf:
        c = crate_of(st[1:])
        return f"memcpy in {c}" if c else "memcpy/memset"
    return crate_of(st) or "other"


def short(s):
    while True:
        t = re.sub(r"<[^<>]*>", "<>", s)
        if t == s:
            return s[:110]
        s = t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--under", help="regex of a function: what runs beneath it, inclusive")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    all_stacks = list(stacks(a.data))
    n = len(all_stacks)
    print(f"samples {n}")
    if a.under:
        pat = re.compile(a.under)
        inc = collections.Counter()
        hits = 0
        for st in all_stacks:
            idx = [i for i, s in enumerate(st) if pat.search(s)]
            if not idx:
                continue
            hits += 1
            for name in {short(s) for s in st[:idx[-1]]}:
                inc[name] += 1
        print(f"{a.under}: {hits} samples ({100 * hits / max(n, 1):.1f} %) inclusive; beneath it:")
        for k, v in inc.most_common(a.top):
            print(f"{100 * v / n:6.2f} %  {k}")
        return
    comp = collections.Counter(component(st) for st in all_stacks)
    leafs = collections.Counter(re.sub(r"\s*\(.*$", "", st[0])[:90] for st in all_stacks)
    tok = collections.Counter()
    for st in all_stacks:
        for s in st:
            if re.search(r"\btokend(_core|_token)?::", s):
                tok[short(s)] += 1
                break
    for title, c in (("by component (leaf-up)", comp), ("leaf frames", leafs),
                     ("innermost tokend frame", tok)):
        print(f"## {title}")
        for k, v in c.most_common(a.top):
            print(f"{100 * v / n:5.1f} %  {k}")


if __name__ == "__main__":
    main()
