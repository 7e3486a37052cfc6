#!/usr/bin/env bash
# End-to-end pipeline benchmark on loopback (compressor + link + decompressor in
# one process): TrainTicket hour 16 replayed LOOPS times as fast as the
# compressor takes it, windows of WINDOW_TRACES traces. Three runs side by side:
# small windows, large windows with the daemon's default step cap (500), and
# large windows without a cap (the paper's 10 full epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example pipeline_bench
bench=target/release/examples/pipeline_bench
echo "== 10 passes, windows of 5,000 traces (default settings)"
"$bench" 10 5000 2>/dev/null
echo "== 40 passes, windows of 20,000 traces (default settings: max_steps 500)"
"$bench" 40 20000 2>/dev/null
echo "== 40 passes, windows of 20,000 traces, no step cap"
"$bench" 40 20000 10 1000000000 2>/dev/null
