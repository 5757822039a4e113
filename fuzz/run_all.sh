#!/bin/sh
# Builds every fuzz target once, then runs each for SECONDS (default 600) one after another at low priority,
# and prints libFuzzer's final line (executions, cov, ft) per target. Logs: fuzz/logs/<target>.log; crashes:
# fuzz/artifacts/<target>/. Seed the corpora first: python3 fuzz/make_corpora.py
#   fuzz/run_all.sh [SECONDS] [TARGET...]
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-"json tokenizer_json vocab_txt bpe_roundtrip wordpiece_encode safetensors_header gemm_args memory_file config_json checkpoint train_config"}
RUSTC_BOOTSTRAP=1 cargo fuzz build -O
mkdir -p logs
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    nice -n 10 "target/x86_64-unknown-linux-gnu/release/$t" -artifact_prefix="artifacts/$t/" \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 "corpus/$t" >"logs/$t.log" 2>&1 \
        || echo "$t: FAILED (see fuzz/logs/$t.log, fuzz/artifacts/$t/)"
    echo "$t: $(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "logs/$t.log" | tail -1)"
done
