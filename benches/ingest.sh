#!/usr/bin/env bash
# Sustained OTLP/gRPC ingest: gent's compressor against rotel-agent with its
# blackhole exporter, side by side in one run, `gent replay` as the load on
# loopback. Runs gent, rotel, gent, rotel (ROUNDS times) and prints spans/s and
# peak resident memory (VmHWM) of each receiver.
#
# Usage: [SPAN_BUDGET=N] [GENT=path/to/gent] [LOAD=otlp] benches/ingest.sh [LOOPS] [ROUNDS]
# (needs .ci/interop's venv for rotel; SPAN_BUDGET sets gent's window.span_budget)
# LOAD=otlp: the load is examples/otlp_load instead (no gent code: its own CSV
# reader and opentelemetry-proto's tonic client), Online Boutique, 512-span
# requests over 4 streams for LOAD_SECONDS (default 60); LOOPS is then ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
loops=${1:-5}
rounds=${2:-2}
gent=${GENT:-target/release/gent}
venv=target/interop/venv
data=${GENT_DATA:-../shared/data}
rotel=$(find -L "$venv" -name rotel-agent -type f | head -1)
[ -x "$gent" ] && [ -n "$rotel" ] || { echo "build gent and run .ci/interop first" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

run() {  # $1 = gent|rotel
  local grpc; grpc=$(port)
  if [ "$1" = gent ]; then
    # The shipped defaults (pipeline on, windows trained as they close), with
    # the spool kept out of the working tree.
    printf 'receiver:\n  grpc: 127.0.0.1:%s\n  http: null\nmetrics:\n  endpoint: null\npipeline:\n  link:\n    spool_dir: %s\n' \
      "$grpc" "$work/spool" > "$work/gent.yaml"
    [ -n "${SPAN_BUDGET:-}" ] && printf 'window:\n  span_budget: %s\n' "$SPAN_BUDGET" >> "$work/gent.yaml"
    "$gent" compressor --config "$work/gent.yaml" 2> "$work/gent.log" &
  else
    "$rotel" start --otlp-grpc-endpoint "127.0.0.1:$grpc" --otlp-http-endpoint "127.0.0.1:$(port)" \
      --exporter blackhole > "$work/rotel.log" 2>&1 &
  fi
  local pid=$!
  wait_port "$grpc"
  local report
  if [ "${LOAD:-replay}" = otlp ]; then
    report=$(target/release/examples/otlp_load "http://127.0.0.1:$grpc" "${LOAD_SECONDS:-60}" 4 512 \
      "$data"/hipster/*_trace.csv.gz | tail -1 | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"spans_sent": r["spans_accepted"], "seconds": r["seconds"], "spans_per_second": r["spans_per_second"], "retries": r["requests_refused"]}))')
  else
    report=$("$gent" replay "$data"/trainticket/12_*_trace.csv.gz --loop "$loops" \
      --endpoint "http://127.0.0.1:$grpc" --json 2>/dev/null | tail -1)
  fi
  local peak; peak=$(peak_kib "$pid")
  kill -TERM "$pid"; wait "$pid" || true
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-6s %10d spans %7.2f s %10.0f spans/s %8.1f MiB peak RSS %d retries" % (sys.argv[2], r["spans_sent"], r["seconds"], r["spans_per_second"], int(sys.argv[3])/1024, r["retries"]))' "$report" "$1" "$peak" | tee -a "$work/results"
}

if [ "${LOAD:-replay}" = otlp ]; then
  [ -x target/release/examples/otlp_load ] || { echo "cargo build --release --example otlp_load first" >&2; exit 1; }
  load="examples/otlp_load, Online Boutique, ${LOAD_SECONDS:-60} s, gRPC, batch 512, 4 streams"
else
  load="gent replay, TrainTicket hour 12 x $loops passes, gRPC, batch 512, 8 in flight"
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load: $load"
for _ in $(seq "$rounds"); do
  run gent
  run rotel
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def median(name, column):
    return statistics.median(float(r[column]) for r in rows if r[0] == name)
g, r = median("gent", 5), median("rotel", 5)
# Each round runs gent then rotel back to back: their ratio is the side-by-side figure.
pairs = [float(a[5]) / float(b[5]) for a, b in zip(rows[0::2], rows[1::2])]
print("median spans/s: gent %.0f, rotel %.0f (ratio of medians %.2f)" % (g, r, g / r))
print("per-round ratios gent/rotel: %s; median %.2f, min %.2f"
      % (" ".join("%.2f" % p for p in pairs), statistics.median(pairs), min(pairs)))
print("median peak RSS: gent %.1f MiB, rotel %.1f MiB" % (median("gent", 7), median("rotel", 7)))
PY
