#!/usr/bin/env bash
# Checks Linux wheels for old distributions: each must be an abi3 wheel tagged manylinux2014
# (manylinux_2_17), `auditwheel show` must find it consistent with manylinux_2_17 for its
# architecture, and no shared object in it may need a GLIBC symbol version newer than 2.17
# (read from the ELF version-needed sections with pyelftools, so the check does not depend on
# the wording of auditwheel's report). `make wheel` runs it on the wheel it builds.
#
# Usage: .ci/check-wheel.sh WHEEL...   (AUDITWHEEL and PYTHON: the tools to use, from
# requirements-release.txt; default .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
AUDITWHEEL=${AUDITWHEEL:-.venv/bin/auditwheel}
PYTHON=${PYTHON:-.venv/bin/python}
MAX_GLIBC=2.17
[ $# -gt 0 ] || { echo "usage: $0 WHEEL..." >&2; exit 2; }

status=0
for wheel in "$@"; do
    name=$(basename "$wheel")
    arch=$(sed -E 's/.*manylinux(2014|_2_17)_([a-z0-9_]+)\.whl$/\2/;t;s/.*/unknown/' <<<"$name")
    case "$name" in
        *-abi3-*manylinux_2_17_*|*-abi3-*manylinux2014_*) ;;
        *) echo "check-wheel: $name is not an abi3 manylinux2014 wheel" >&2; status=1; continue ;;
    esac
    report=$("$AUDITWHEEL" show "$wheel")
    echo "$report"
    if ! tr '\n' ' ' <<<"$report" | grep -q "platform tag: \"manylinux_2_17_$arch\""; then
        echo "check-wheel: auditwheel does not find $name consistent with manylinux_2_17_$arch" >&2
        status=1
    fi
    if ! "$PYTHON" - "$wheel" "$MAX_GLIBC" <<'PY'
import io
import sys
import zipfile

from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

wheel, limit = sys.argv[1], tuple(int(v) for v in sys.argv[2].split("."))
worst: dict[str, tuple[int, ...]] = {}
with zipfile.ZipFile(wheel) as z:
    objects = [n for n in z.namelist() if n.endswith(".so") or ".so." in n]
    for name in objects:
        elf = ELFFile(io.BytesIO(z.read(name)))
        needed = []
        for section in elf.iter_sections():
            if isinstance(section, GNUVerNeedSection):
                for _, aux in section.iter_versions():
                    needed += [a.name for a in aux if a.name.startswith("GLIBC_")]
        versions = [tuple(int(v) for v in n[6:].split(".")) for n in needed if n[6:7].isdigit()]
        worst[name] = max(versions, default=(0,))
if not objects:
    sys.exit(f"check-wheel: {wheel} holds no shared object")
bad = False
for name, v in worst.items():
    shown = ".".join(map(str, v))
    print(f"check-wheel: {name} needs GLIBC {shown} at most")
    bad |= v > limit
sys.exit(f"check-wheel: a shared object needs GLIBC newer than {sys.argv[2]}" if bad else 0)
PY
    then
        status=1
    fi
done
[ "$status" = 0 ] && echo "check-wheel: OK ($# wheel(s), GLIBC <= $MAX_GLIBC)"
exit "$status"
