#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ with cargo-fuzz (libFuzzer), each for
# FUZZ_SECONDS (60 by default), seeded by the corpora kept in fuzz/corpus/.
# New inputs that reach new code go to $CARGO_TARGET_DIR/corpus/<target>
# (target/fuzz/corpus by default); copy the interesting ones into fuzz/corpus/.
# cargo-fuzz needs nightly-only flags (sanitizers); the machine's one stable
# toolchain gets them with RUSTC_BOOTSTRAP=1.
#
#   scripts/fuzz.sh                        # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh path_normaliser
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(path_normaliser config_parser signature_sections redaction_scanner)

export RUSTC_BOOTSTRAP=1
bin_dir="${EDGEGATE_TOOLS_DIR:-$HOME/.cache/edgegate/tools}"
export PATH="$bin_dir/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null; then
    cargo install --quiet --locked --root "$bin_dir" cargo-fuzz
fi
export CARGO_TARGET_DIR="${EDGEGATE_FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "$CARGO_TARGET_DIR/corpus/$t"
    echo "fuzzing $t for ${seconds}s" >&2
    log="$CARGO_TARGET_DIR/$t.log"
    status=0
    cargo fuzz run --fuzz-dir fuzz "$t" "$CARGO_TARGET_DIR/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" | sed "s/^/$t /" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "error: fuzzing $t failed (exit $status); a crashing input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
