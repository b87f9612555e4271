#!/usr/bin/env bash
# Runs the standard benchmark matrix of issue 7: 3 algorithms (RS256, ES256,
# EdDSA) x gRPC/HTTP x memory/Redis store x workloads (issue, introspection,
# RFC 8693 token exchange, the transport floor), each cell driven by the
# release `tokend-bench` against a release `tokend` child process over
# loopback. tokend-bench starts that tokend with a generated key and a config
# holding the clients the workloads need (bench-client, which also exchanges
# tokens for billing-api, and bench-portal, whose client_credentials tokens
# are the subject tokens). Writes docs/bench/results.md (table + target
# checks + token exchange against its verify+sign floor) and docs/bench/chart.png.
#
#   ./scripts/bench-matrix.sh                      # full matrix, ~3 s per workload
#   BENCH_STORES=memory ./scripts/bench-matrix.sh  # memory rows only
#   BENCH_DURATION=5 BENCH_CONCURRENCY=32 ./scripts/bench-matrix.sh
#   BENCH_TARGETS=grpc-exchange,http-exchange ./scripts/bench-matrix.sh  # some workloads only
#   BENCH_TRACING= ./scripts/bench-matrix.sh       # without the tracing rows
#   BENCH_TAIL= ./scripts/bench-matrix.sh          # without the tail-latency runs
#
# The tracing rows (issue 20, docs/tracing.md): the same workloads with trace
# export off, at sampling ratio 0.01 and at 1 (BENCH_TRACING), one algorithm
# (BENCH_TRACING_ALG, default EdDSA: the cheapest signature, so the largest
# relative cost), each store; tokend-bench --trace-ratio runs the OTLP sink.
#
# The tail-latency runs (issue 21 step 7, docs/performance.md "Tail latency"):
# issue and introspection (cold and cached) over both transports, each
# algorithm (BENCH_TAIL_ALGS, default the matrix's), memory store
# (BENCH_TAIL_STORES): tokend-bench measures each workload's closed-loop
# maximum, then runs it open-loop (fixed rate, latency from the intended send
# time) at the fractions in BENCH_TAIL (default 0.5,0.9), each followed by the
# transport's probe at the same rate (--matched-floor). Five runs of
# BENCH_DURATION per workload: about 100-150 s per algorithm at 3 s (RS256
# longest: it issues the tokens cold introspection needs).
#
# Starts its own redis-server on a free loopback port (installs Debian's
# package when missing) and a matplotlib venv under target/ for the chart.
# Exit status 1 when any cell had a non-success response or did not run.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-3}
CONCURRENCY=${BENCH_CONCURRENCY:-16}
STORES=${BENCH_STORES:-memory redis}
ALGS=${BENCH_ALGS:-RS256 ES256 EdDSA}
# Empty: tokend-bench's default workloads (all of them).
TARGETS=${BENCH_TARGETS:-}
RAW=target/bench/results.jsonl
TRACING=${BENCH_TRACING-off 0.01 1}
TRACING_ALG=${BENCH_TRACING_ALG:-EdDSA}
TRACING_TARGETS=${BENCH_TRACING_TARGETS:-grpc-issue,http-issue,grpc-introspect,http-introspect}
TRACE_RAW=target/bench/tracing.jsonl
TAIL=${BENCH_TAIL-0.5,0.9}
TAIL_ALGS=${BENCH_TAIL_ALGS:-$ALGS}
TAIL_STORES=${BENCH_TAIL_STORES:-memory}
TAIL_TARGETS=${BENCH_TAIL_TARGETS:-grpc-issue,http-issue,grpc-introspect,http-introspect,grpc-introspect-hot,http-introspect-hot}
TAIL_RAW=target/bench/tail.jsonl
OUT=docs/bench

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

echo "== cargo build --release -p tokend -p tokend-bench --bins"
cargo build --release -p tokend -p tokend-bench --bins

mkdir -p target/bench "$OUT"
rm -f "$RAW" "$TRACE_RAW" "$TAIL_RAW"

REDIS_PID=""
REDIS_DIR=""
cleanup() {
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
  if [ -n "$REDIS_DIR" ]; then rm -rf "$REDIS_DIR"; fi
}
trap cleanup EXIT

if [[ " $STORES ${TAIL:+$TAIL_STORES} " == *" redis "* ]]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing redis-server (Debian package)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
  REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  REDIS_DIR=$(mktemp -d)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  echo "== redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
fi

failed=()
for store in $STORES; do
  case $store in
    memory) url="memory://" ;;
    redis) url="redis://127.0.0.1:$REDIS_PORT/0" ;;
    *) echo "unknown store $store"; exit 2 ;;
  esac
  for alg in $ALGS; do
    echo
    echo "==== $alg, $store"
    if ! target/release/tokend-bench --alg "$alg" --store "$url" \
        --duration "$DURATION" --concurrency "$CONCURRENCY" --json "$RAW" \
        ${TARGETS:+--targets "$TARGETS"}; then
      failed+=("$alg/$store")
    fi
  done
done

store_url() {
  case $1 in
    memory) echo "memory://" ;;
    redis) echo "redis://127.0.0.1:$REDIS_PORT/0" ;;
  esac
}
if [ -n "$TRACING" ]; then
  for store in $STORES; do
    for ratio in $TRACING; do
      trace_args=()
      if [ "$ratio" != off ]; then trace_args=(--trace-ratio "$ratio"); fi
      echo
      echo "==== tracing $ratio, $TRACING_ALG, $store"
      if ! target/release/tokend-bench --alg "$TRACING_ALG" --store "$(store_url "$store")" \
          --duration "$DURATION" --concurrency "$CONCURRENCY" --json "$TRACE_RAW" \
          --targets "$TRACING_TARGETS" "${trace_args[@]}"; then
        failed+=("tracing-$ratio/$store")
      fi
    done
  done
fi

if [ -n "$TAIL" ]; then
  for store in $TAIL_STORES; do
    for alg in $TAIL_ALGS; do
      echo
      echo "==== tail latency (open loop at $TAIL x max), $alg, $store"
      if ! target/release/tokend-bench --alg "$alg" --store "$(store_url "$store")" \
          --duration "$DURATION" --concurrency "$CONCURRENCY" --json "$TAIL_RAW" \
          --targets "$TAIL_TARGETS" --rate-of-max "$TAIL" --matched-floor; then
        failed+=("tail-$alg/$store")
      fi
    done
  done
fi

if [ -n "$REDIS_PID" ]; then
  # Evidence for the store targets: Redis commands per workload type.
  redis-cli -p "$REDIS_PORT" info commandstats > target/bench/redis-commandstats.txt || true
fi

echo
echo "== report"
if [ ! -x target/bench-venv/bin/python ] || ! target/bench-venv/bin/python -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv target/bench-venv
  target/bench-venv/bin/pip install -q matplotlib
fi
target/bench-venv/bin/python scripts/bench_report.py "$RAW" "$OUT" \
  --duration "$DURATION" --concurrency "$CONCURRENCY" --failed "${failed[*]:-}" \
  ${TRACING:+--tracing "$TRACE_RAW"} ${TAIL:+--tail "$TAIL_RAW"}

if [ ${#failed[@]} -gt 0 ]; then
  echo "cells with errors or that did not run: ${failed[*]}"
  exit 1
fi
