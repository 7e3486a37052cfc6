#!/usr/bin/env bash
# Soak test of the whole pipeline on loopback (issue 20): compressor and
# decompressor as separate processes with the shipped defaults (60 s windows,
# Gen-T), `gent replay` of TrainTicket at a fixed rate for SOAK_SECONDS, then
# as fast as the compressor accepts for MAX_SECONDS. Beforehand, the receiver
# alone (pipeline off) under the same unlimited replay for MAX_SECONDS: the
# rate the pipeline's sustained rate is compared with.
#
# Every 10 s it samples the compressor's resident memory (VmRSS), spans
# accepted and refused, resident spans and windows closed; at the end it
# prints per window: spans, close -> spooled seconds, training and
# self-evaluation seconds; and writes the samples as CSV and an SVG plot.
#
# Usage: [GENT=path] [DATA=dir] [NICE=n] benches/soak.sh RATE SOAK_SECONDS MAX_SECONDS OUT_DIR
# NICE=n runs the decompressor and its backend (rotel) at nice n: on 2 shared
# cores, a decompressor that has fallen behind takes whatever CPU it gets from
# the compressor; in production it runs beside the tracing backend, not on the
# compressor's host. The compressor and the replay keep the default priority.
# PIPELINE='key: value' adds one setting to the compressor's `pipeline` section,
# e.g. PIPELINE='timing_spans: 0' to compare a setting side by side.
# e.g.   benches/soak.sh 300000 600 120 /tmp/soak   (the issue's run)
# The decompressor exports over OTLP/gRPC to a local rotel-agent with its
# blackhole exporter (needs .ci/interop's venv, target/interop/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:?spans per second}
soak=${2:?seconds at the fixed rate}
max=${3:?seconds as fast as accepted}
out=${4:?output folder}
gent=${GENT:-target/release/gent}
data=${DATA:-${GENT_DATA:-../shared/data}}/trainticket
rotel=$(find -L target/interop/venv -name rotel-agent -type f 2>/dev/null | head -1 || true)
[ -x "$gent" ] && [ -n "$rotel" ] || { echo "build gent and run .ci/interop first" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on $1" >&2; return 1
}
metric() {  # $1 = port, $2 = metric name (sum of its series)
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%.0f", s}'
}
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Spans in one pass over the data, for the loop count.
pass=$("$gent" stats "$data"/*_trace.csv.gz --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["spans"])')
loops() { python3 -c "import math; print(math.ceil($1 / $pass) + 1)"; }

start_compressor() {  # $1 = pipeline|receiver-only; sets cpid, cgrpc, cmetrics
  cgrpc=$(port); cmetrics=$(port)
  {
    printf 'receiver:\n  grpc: 127.0.0.1:%s\n  http: null\nmetrics:\n  endpoint: 127.0.0.1:%s\n' "$cgrpc" "$cmetrics"
    if [ "$1" = pipeline ]; then
      printf 'pipeline:\n  link:\n    endpoint: http://127.0.0.1:%s\n    spool_dir: %s\n' "$dlink" "$work/spool"
      if [ -n "${PIPELINE:-}" ]; then printf '  %s\n' "$PIPELINE"; fi
    else
      printf 'pipeline: null\n'
    fi
  } > "$work/compressor-$1.yaml"
  RUST_LOG=info "$gent" compressor --config "$work/compressor-$1.yaml" 2> "$out/compressor-$1.log" &
  cpid=$!
  wait_port "$cgrpc"
}

replay() {  # $1 = rate (0: unlimited), $2 = seconds; runs in the background, sets rpid
  local flags=()
  [ "$1" != 0 ] && flags=(--rate "$1")
  local per_second=$1
  [ "$per_second" = 0 ] && per_second=2000000
  local total=$(( per_second * $2 ))
  "$gent" replay "$data"/*_trace.csv.gz --loop "$(loops "$total")" "${flags[@]}" \
    --endpoint "http://127.0.0.1:$cgrpc" > /dev/null 2>&1 &
  rpid=$!
}

sample() {  # $1 = phase, $2 = seconds; appends a row every 10 s
  local end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    sleep 10
    printf '%s,%s,%s,%s,%s,%s,%s,%s\n' "$(date +%s)" "$1" "$(rss_mib "$cpid")" \
      "$(metric "$cmetrics" gent_received_spans_total)" "$(metric "$cmetrics" gent_refused_spans_total)" \
      "$(metric "$cmetrics" gent_resident_spans)" "$(metric "$cmetrics" gent_windows_closed_total)" \
      "$(rss_mib "${dpid:-0}")" >> "$out/samples.csv"
  done
}

echo "time,phase,rss_mib,accepted,refused,resident_spans,windows,decompressor_rss_mib" > "$out/samples.csv"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); data: TrainTicket, $pass spans a pass; decompressor and rotel at nice ${NICE:-0}"

# 1. The receiver alone, as fast as it accepts.
start_compressor receiver-only
replay 0 "$max"
sample receiver-only "$max"
kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
kill -TERM "$cpid"; wait "$cpid" || true

# 2. The pipeline: decompressor, compressor, the fixed rate, then unlimited.
dlink=$(port); dmetrics=$(port); sink=$(port)
nice -n "${NICE:-0}" "$rotel" start --otlp-grpc-endpoint "127.0.0.1:$sink" --otlp-http-endpoint "127.0.0.1:$(port)" \
  --exporter blackhole > "$work/rotel.log" 2>&1 &
wait_port "$sink"
printf 'link:\n  listen: 127.0.0.1:%s\nmetrics:\n  endpoint: 127.0.0.1:%s\nexporters:\n  otlp_grpc:\n    endpoint: http://127.0.0.1:%s\n  files: []\n' \
  "$dlink" "$dmetrics" "$sink" > "$work/decompressor.yaml"
RUST_LOG=info nice -n "${NICE:-0}" "$gent" decompressor --config "$work/decompressor.yaml" 2> "$out/decompressor.log" &
dpid=$!
wait_port "$dlink"
start_compressor pipeline
replay "$rate" "$soak"
sample fixed-rate "$soak"
kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
replay 0 "$max"
sample unlimited "$max"
kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
kill -TERM "$cpid"; wait "$cpid" || true
sleep 5
kill -TERM "$dpid"; wait "$dpid" || true

python3 benches/soak_report.py "$out" "$rate"
