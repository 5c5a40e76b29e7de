#!/usr/bin/env bash
# Install the Debian packages the tests need beyond Python wheels (names as arguments):
#   pocl-opencl-icd  the PoCL CPU OpenCL device that executes the GPU kernels in `make test`
#                    (Debian's PoCL picks a code-generation target from the CPU's features,
#                    so it also works on CPUs newer than its LLVM; PyPI's PoCL 3.0 does not)
#   oclgrind         the OpenCL simulator behind `make test-kernels-checked`
# As root with apt-get, missing packages are installed. Otherwise this prints what to
# install and fails; CLIPRESC_SYSTEM_DEPS=skip skips the check (e.g. a user without root
# who installed an OpenCL driver some other way: see the README's "Testing" section).
set -euo pipefail
[ "${CLIPRESC_SYSTEM_DEPS:-}" = skip ] && exit 0
missing=()
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    exit 0
fi
cat >&2 <<MSG
clipresc's tests need these system packages: ${missing[*]}
  Debian/Ubuntu: sudo apt-get install ${missing[*]}
  without root:  see the README's "Testing" section, then rerun with CLIPRESC_SYSTEM_DEPS=skip
MSG
exit 1
