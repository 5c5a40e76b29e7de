#!/usr/bin/env bash
# Builds the wheel (`maturin build --release`, abi3) and the sdist (`maturin sdist`),
# installs each into a fresh virtual environment (.venv-dist-wheel, .venv-dist-sdist: the
# package, its dependencies and pytest, nothing else) and runs tests/smoke against it, from
# outside the source tree (`make dist-check` calls this; `make test` runs it).
# MANYLINUX_WHEEL, when set, names a wheel built by `make wheel` (manylinux2014, glibc 2.17,
# linked by zig): it is installed into .venv-dist-manylinux and smoke-tested the same way.
#
# Installing the sdist compiles the Rust code again (release profile, fat LTO). Timings go
# to stdout and to target/dist-check-report.txt. PYTHON picks the interpreter of the fresh
# environments (default python3); MATURIN the maturin to build with (default .venv's).
# Set CARGO_LOCK=/path/to/lockfile to serialise the Rust builds with other jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PYTHON=${PYTHON:-python3}
MATURIN=${MATURIN:-$repo/.venv/bin/maturin}
dist=target/dist
report=target/dist-check-report.txt
lock() { if [ -n "${CARGO_LOCK:-}" ]; then flock "$CARGO_LOCK" "$@"; else "$@"; fi; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.0f}')"; }

mkdir -p target
rm -rf "$dist"
t0=$(now)
lock "$MATURIN" build --release -q -o "$dist"
t1=$(now)
lock "$MATURIN" sdist -o "$dist" >/dev/null
t2=$(now)
wheel=$(ls "$dist"/*.whl)
sdist=$(ls "$dist"/*.tar.gz)
case "$(basename "$wheel")" in
    *-abi3-*) ;;
    *) echo "dist-check: $wheel is not an abi3 wheel" >&2; exit 1 ;;
esac
echo "dist-check: built $(basename "$wheel") ($(secs "$t0" "$t1") s), $(basename "$sdist") ($(secs "$t1" "$t2") s)"

smoke() {  # venv
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && CLIPRESC_SMOKE_INSTALLED=1 "$repo/$1/bin/python" -m pytest -q \
        -p no:cacheprovider --noconftest --rootdir "$repo" "$repo/tests/smoke")
    rm -rf "$tmp"
}

install() {  # venv, what to install, [lock: take CARGO_LOCK for the install]
    "$PYTHON" -m venv --clear "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
    if [ -n "${3:-}" ]; then
        lock "$1/bin/python" -m pip install -q "$2" pytest
    else
        "$1/bin/python" -m pip install -q "$2" pytest
    fi
}

t3=$(now)
install .venv-dist-wheel "$wheel"
t4=$(now)
smoke .venv-dist-wheel
t5=$(now)
# the sdist builds the extension from source in pip's isolated build environment
install .venv-dist-sdist "$sdist" lock
t6=$(now)
smoke .venv-dist-sdist
t7=$(now)
manylinux=""
if [ -n "${MANYLINUX_WHEEL:-}" ]; then
    case "$(basename "$MANYLINUX_WHEEL")" in
        *-abi3-*manylinux_2_17_*|*-abi3-*manylinux2014_*) ;;
        *) echo "dist-check: $MANYLINUX_WHEEL is not an abi3 manylinux2014 wheel" >&2; exit 1 ;;
    esac
    install .venv-dist-manylinux "$MANYLINUX_WHEEL"
    t8=$(now)
    smoke .venv-dist-manylinux
    t9=$(now)
    manylinux=", $(basename "$MANYLINUX_WHEEL") install $(secs "$t7" "$t8") s + smoke $(secs "$t8" "$t9") s"
fi
t_end=$(now)

line="wheel build $(secs "$t0" "$t1") s, sdist $(secs "$t1" "$t2") s, wheel install $(secs "$t3" "$t4") s + smoke $(secs "$t4" "$t5") s, sdist install (compiles Rust) $(secs "$t5" "$t6") s + smoke $(secs "$t6" "$t7") s$manylinux, total $(secs "$t0" "$t_end") s"
echo "dist-check: OK: $line"
echo "$(date -u +%Y-%m-%dT%H:%MZ) $line" >>"$report"
