#!/usr/bin/env bash
# Fuzzes each core target for a fixed budget (`make fuzz` calls this).
#
#   rust/fuzz/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 120 s; every target)
#   rust/fuzz/fuzz.sh --cmin [TARGET...]                     (fold finds into the repo corpus)
#
# Engine (FUZZ_ENGINE=auto|libfuzzer|stable): libFuzzer through `cargo +nightly fuzz`
# (coverage-guided, AddressSanitizer) when cargo-fuzz and a nightly toolchain are installed,
# else the stable driver `fuzz_stable` (mutation loop, feature feedback, no sanitizer).
# Seeds come from rust/fuzz/corpus/<target> (kept in git, replayed by `cargo test`); new
# inputs go to target/fuzz-work/<target>, failing inputs to rust/fuzz/artifacts/<target>
# (libFuzzer) or target/fuzz-artifacts/<target> (stable). A summary line per target is
# appended to target/fuzz-summary.txt. Set CARGO_LOCK=/path/to/lockfile to serialise the
# builds with other jobs (the fuzzing itself runs outside the lock).
set -euo pipefail
cd "$(dirname "$0")/../.."

all_targets=(scale perturb vjp noise project)
work=target/fuzz-work
stable_bin=target/fuzz/release/fuzz_stable
lock() { if [ -n "${CARGO_LOCK:-}" ]; then flock "$CARGO_LOCK" "$@"; else "$@"; fi; }

build_stable() {
    CARGO_TARGET_DIR=target/fuzz lock cargo build -q --release --no-default-features \
        --manifest-path rust/fuzz/Cargo.toml --bin fuzz_stable
}

if [ "${1:-}" = "--cmin" ]; then
    shift
    targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
    build_stable
    for t in "${targets[@]}"; do
        [ -d "$work/$t" ] || continue
        tmp=$(mktemp -d)
        "$stable_bin" cmin "$t" "$tmp" "rust/fuzz/corpus/$t" "$work/$t"
        find "rust/fuzz/corpus/$t" -type f ! -name 'regress-*' -delete
        cp -n "$tmp"/* "rust/fuzz/corpus/$t/" 2>/dev/null || true
        rm -rf "$tmp"
    done
    exit 0
fi

secs=${1:-120}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

engine=${FUZZ_ENGINE:-auto}
if [ "$engine" = auto ]; then
    if cargo fuzz --version >/dev/null 2>&1 && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        engine=libfuzzer
    else
        engine=stable
    fi
fi
echo "fuzz: engine $engine, ${secs} s per target, targets: ${targets[*]}"
mkdir -p target
summary=target/fuzz-summary.txt
failed=()

for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    log="$work/$t.log"
    if [ "$engine" = libfuzzer ]; then
        # build under the lock with the very flags of `fuzz run` (`fuzz build` differs: `run`
        # adds `--config profile.release.debug=...`, so it would rebuild outside the lock)
        if ! lock cargo +nightly fuzz run -O --fuzz-dir rust/fuzz \
            --target-dir target/fuzz-nightly "$t" -- -help=1 >"$log" 2>&1; then
            cat "$log" >&2
            exit 1
        fi
        set +e
        cargo +nightly fuzz run -O --fuzz-dir rust/fuzz --target-dir target/fuzz-nightly "$t" \
            "$work/$t" "rust/fuzz/corpus/$t" -- \
            -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
            >"$log" 2>&1
        rc=$?
        set -e
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
        cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
        line="$t: libFuzzer+ASan, ${secs} s, ${runs:-?} runs (${rate:-?}/s), ${cov:-no coverage line}"
    else
        # always: a driver left from an earlier checkout would test the old harness
        build_stable
        set +e
        "$stable_bin" run "$t" --seconds "$secs" --corpus "$work/$t" \
            --seeds "rust/fuzz/corpus/$t" --artifacts "target/fuzz-artifacts/$t" >"$log" 2>&1
        rc=$?
        set -e
        # `|| true`: a failed run has no "done" line, and under `set -e -o pipefail` the
        # failed grep would end the script before it reports the failure
        line="$t: stable driver, $(grep -oE 'done, .*' "$log" | tail -1 || true)"
    fi
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        line="$line -- FAILED (exit $rc, see $log)"
        tail -40 "$log" >&2
    fi
    echo "$line"
    echo "$(date -u +%Y-%m-%dT%H:%MZ) $line" >>"$summary"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failures in ${failed[*]}" >&2
    exit 1
fi
