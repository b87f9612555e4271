#!/usr/bin/env bash
# What trace export costs per request, measured so that a shared machine's
# drift cancels out: tokend-bench runs with export off, at ratio 0.01 and at
# ratio 1 in turn, ROUNDS times, each a fresh server (EdDSA, memory store,
# gRPC and HTTP issue), and the medians of server CPU per request are
# compared. Needs the release binaries (cargo build --release --bin tokend
# -p tokend-bench). Usage: ROUNDS=4 DURATION=3 ./scripts/bench-tracing-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-target/release/tokend-bench}
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-3}
ALG=${ALG:-EdDSA}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for i in $(seq "$ROUNDS"); do
  for r in off 0.01 1; do
    extra=()
    [ "$r" = off ] || extra=(--trace-ratio "$r")
    "$BENCH" --alg "$ALG" --targets grpc-issue,http-issue --duration "$DURATION" \
      --json "$OUT/$r.json" "${extra[@]}" >/dev/null 2>&1
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
cpu = {}
for r in ("off", "0.01", "1"):
    for line in (out / f"{r}.json").read_text().splitlines():
        o = json.loads(line)
        if o.get("errors", 0):
            sys.exit(f"{r} {o['target']}: {o['errors']} errors; no figure")
        cpu.setdefault((o["target"], r), []).append(o["server_cpu_us_per_req"])
print("workload     off (median)  0.01 (median)  vs off   1 (median)  vs off   runs")
for t in ("grpc-issue", "http-issue"):
    off = statistics.median(cpu[(t, "off")])
    low = statistics.median(cpu[(t, "0.01")])
    one = statistics.median(cpu[(t, "1")])
    print(f"{t:<12} {off:>9.1f} us  {low:>10.1f} us  {100*(low/off-1):+5.1f} %  {one:>7.1f} us  {100*(one/off-1):+5.1f} %   {len(cpu[(t, 'off')])}")
PY
