#!/usr/bin/env bash
# Execute the GPU kernels under the Oclgrind OpenCL simulator with its checkers on (data
# races, out-of-bounds and uninitialised accesses, API misuse) and fail on any diagnostic.
# Oclgrind is CPU-independent but some 40x slower than PoCL, so the kernel tests run in
# their reduced form (CLIPRESC_KERNEL_TESTS=reduced; see tests/gpu/_opencl_env.py).
# First a canary kernel with a known race and uninitialised read must be reported: a
# checker that reports nothing cannot pass this check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
icd_lib=${OCLGRIND_ICD_LIB:-}
if [ -z "$icd_lib" ]; then
    for c in /usr/lib/oclgrind/liboclgrind-rt-icd.so /usr/lib/*/oclgrind/liboclgrind-rt-icd.so \
        /usr/local/lib/liboclgrind-rt-icd.so; do
        [ -e "$c" ] && icd_lib=$c && break
    done
fi
if [ -z "$icd_lib" ]; then
    echo "Oclgrind's ICD library not found: apt-get install oclgrind, or set OCLGRIND_ICD_LIB" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A vendors directory holding Oclgrind alone: the kernels cannot run anywhere else.
mkdir "$work/vendors"
echo "$icd_lib" >"$work/vendors/oclgrind.icd"
export OCL_ICD_VENDORS="$work/vendors" CLIPRESC_OPENCL_DEVICE=oclgrind CLIPRESC_REQUIRE_OPENCL=1
export OCLGRIND_DATA_RACES=1 OCLGRIND_UNINITIALIZED=1 OCLGRIND_CHECK_API=1

OCLGRIND_LOG="$work/canary.log" "$PY" tests/gpu/oclgrind_canary.py
for expected in "data race" "Uninitialized value"; do
    if ! grep -q "$expected" "$work/canary.log"; then
        echo "Oclgrind did not report the canary's '$expected': its checkers are not active" >&2
        exit 1
    fi
done
echo "oclgrind check: the canary's race and uninitialised read were reported"

# The uninitialised-value checker keeps a shadow per buffer index that it never frees, and
# a new buffer may reuse a freed one's index (false reports past the old size, missed ones
# within it): the OpenCL backend never frees a buffer on Oclgrind. That run must be clean;
# the plain one shows whether this Oclgrind still has the artefact.
OCLGRIND_LOG="$work/stale-retain.log" "$PY" tests/gpu/oclgrind_stale_shadow.py retain
if [ -s "$work/stale-retain.log" ]; then
    echo "Oclgrind reported a buffer the backend's allocator gave a fresh index:" >&2
    head -n 20 "$work/stale-retain.log" >&2
    exit 1
fi
OCLGRIND_LOG="$work/stale-free.log" "$PY" tests/gpu/oclgrind_stale_shadow.py free
if grep -q "uninitialized value" "$work/stale-free.log"; then
    echo "oclgrind check: stale shadow on a reused buffer index (this Oclgrind has the artefact" \
        "the backend's retention avoids)"
else
    echo "oclgrind check: no stale shadow on a reused buffer index (this Oclgrind does not" \
        "need the backend's retention)"
fi

log="$work/oclgrind.log"
api="$work/api-errors.txt"
: >"$log"
start=$SECONDS
set +e
# Kernel diagnostics go to OCLGRIND_LOG; API-misuse reports (OCLGRIND_CHECK_API) are
# written by the runtime straight to file descriptor 2, so pytest captures only Python's
# sys.stderr (--capture=sys) and the process's own stderr is kept for the API check.
# OCLGRIND_TESTS: the test files to run (default: the kernel execution tests); arguments
# are passed on to pytest, e.g. -k to select tests within them.
# shellcheck disable=SC2086
OCLGRIND_LOG="$log" CLIPRESC_KERNEL_TESTS=reduced \
    "$PY" -m pytest -q -p no:cacheprovider --capture=sys ${OCLGRIND_TESTS:-tests/gpu/test_opencl_exec.py} \
    "$@" 2>"$api"
status=$?
set -e
echo "oclgrind check: pytest exit $status in $((SECONDS - start)) s"
if [ "$status" -ne 0 ]; then
    grep -v -e '^$' -e 'Oclgrind - OpenCL' -e $'^\t' "$api" | tail -n 40 >&2 || true
fi
if [ -s "$log" ]; then
    echo "Oclgrind reported $(wc -l <"$log") log line(s):" >&2
    head -n 60 "$log" >&2
    exit 1
fi
echo "oclgrind check: no diagnostics in Oclgrind's log"
"$PY" .ci/oclgrind_api_errors.py "$api"
exit "$status"
