#!/usr/bin/env bash
# Gen-T window model on TrainTicket hour 12 (issue 5's benchmark): training
# time, generation speed and packet size against gzip-compressed OTLP, with f32
# and f16 weights, with the GCN topology embedding and without (--no-gcn).
# Usage: benches/gent_model.sh [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-10}
data=${GENT_DATA:-../shared/data}
cargo build --release --locked -q
gent=target/release/gent
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
inputs=()
for m in $(seq -w 0 59); do inputs+=("$data/trainticket/12_${m}_trace.csv.gz"); done
printf '%-12s %10s %12s %14s %9s %12s %14s\n' weights train_s packet_bytes gzip_otlp_bytes ratio generate_s spans_per_s
for variant in f32 f16 f32-no-gcn f16-no-gcn; do
  flag=()
  case "$variant" in f16*) flag+=(--f16) ;; esac
  case "$variant" in *no-gcn) flag+=(--no-gcn) ;; esac
  "$gent" train "${inputs[@]}" --out "$work/$variant.gent" --epochs "$epochs" "${flag[@]}" --json 2>/dev/null | tail -1 > "$work/train.json"
  "$gent" generate "$work/$variant.gent" --format otlp-proto --out "$work/gen.pb" --json 2>/dev/null | tail -1 > "$work/gen.json"
  python3 - "$variant" "$work/train.json" "$work/gen.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[2])); g = json.load(open(sys.argv[3]))
print("%-12s %10.1f %12d %14d %8.2f%% %12.2f %14.0f" % (sys.argv[1], t["train_seconds"], t["packet_bytes"], t["gzip_otlp_bytes"],
      100.0 * t["packet_bytes"] / t["gzip_otlp_bytes"], g["generate_seconds"], g["spans"] / g["generate_seconds"]))
print("             repairs: %s" % json.dumps(g["repairs"]))
PY
done
