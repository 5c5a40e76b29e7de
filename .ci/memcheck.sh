#!/usr/bin/env bash
# Runs the core's cargo test binaries (the fuzz corpus replay included) under valgrind
# memcheck; any memory error or definite leak fails (`make memcheck` calls this).
#
# The binaries are built with the `memcheck` profile (release optimisation and SIMD paths,
# debug info, debug assertions; see Cargo.toml) and found through cargo's JSON messages.
# Tests too slow under valgrind's ~50x slowdown can be skipped by name with
# MEMCHECK_SKIP="name1 name2" (none are by default). Set CARGO_LOCK=/path/to/lockfile to
# serialise the build with other jobs.
set -euo pipefail
cd "$(dirname "$0")/.."

lock() { if [ -n "${CARGO_LOCK:-}" ]; then flock "$CARGO_LOCK" "$@"; else "$@"; fi; }
command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed" >&2; exit 1; }

bins=$(lock cargo test -p clipresc-core --profile memcheck --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])
')
[ -n "$bins" ] || { echo "memcheck: no test binaries found" >&2; exit 1; }

skip=()
for name in ${MEMCHECK_SKIP:-}; do skip+=(--skip "$name"); done

status=0
for bin in $bins; do
    echo "== valgrind memcheck: $(basename "$bin")"
    start=$(date +%s)
    # one test thread keeps the output readable; rayon still runs its own pool inside
    if ! RAYON_NUM_THREADS=2 valgrind --tool=memcheck --error-exitcode=1 \
        --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
        --track-origins=yes --quiet \
        "$bin" --test-threads=1 -q "${skip[@]}"; then
        status=1
        echo "memcheck: FAILED in $(basename "$bin")" >&2
    fi
    echo "   ($(($(date +%s) - start)) s)"
done
exit $status
