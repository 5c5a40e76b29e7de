"""The Rust mirror of XLA's FFI C API (``rust/py/src/xla_ffi.rs``) against the header that
ships with the installed jaxlib: a small program compiled with the system C++ compiler
(older headers are C++ only) prints ``sizeof`` / ``offsetof`` of every mirrored struct and
field."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

jax = pytest.importorskip("jax")

from clipresc import _clipresc  # noqa: E402

# Mirrored only up to the fields the handlers use (newer headers add fields at the end).
PREFIXES = {"XLA_FFI_Api", "XLA_FFI_CallFrame", "XLA_FFI_Metadata"}


def _include_dir() -> Path:
    ffi = getattr(jax, "ffi", None)
    if ffi is None or not hasattr(ffi, "include_dir"):
        import jax.extend.ffi as ffi
    return Path(ffi.include_dir())


def _c_layout(tmp_path: Path, layout: dict[str, tuple[int, dict[str, int]]]) -> dict[str, int]:
    header = _include_dir() / "xla" / "ffi" / "api" / "c_api.h"
    text = header.read_text()
    lines = ["#include <cstdio>", "#include <cstddef>", '#include "xla/ffi/api/c_api.h"']
    lines.append("int main(void) {")
    for name, (_, fields) in layout.items():
        lines.append(f'printf("{name} %zu\\n", sizeof({name}));')
        for field in fields:
            lines.append(f'printf("{name}.{field} %zu\\n", offsetof({name}, {field}));')
    if "state_type_id" in text:
        lines.append(
            'printf("XLA_FFI_Metadata.state_type_id %zu\\n", '
            "offsetof(XLA_FFI_Metadata, state_type_id));"
        )
    lines.append('printf("XLA_FFI_API_MAJOR %d\\n", XLA_FFI_API_MAJOR);')
    lines.append("return 0; }")
    src = tmp_path / "layout.cc"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    cc = shutil.which("c++")
    if cc is None:
        pytest.skip("no C++ compiler (c++) on PATH")
    subprocess.run([cc, "-I", str(_include_dir()), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_mirrored_structs_match_the_header(tmp_path: Path) -> None:
    (major, minor), layout = _clipresc.xla_ffi_layout()
    c = _c_layout(tmp_path, layout)
    assert (major, minor) == (0, 1)  # what jaxlib 0.4.35 .. today accept
    assert c["XLA_FFI_API_MAJOR"] == major
    for name, (size, fields) in layout.items():
        for field, offset in fields.items():
            assert c[f"{name}.{field}"] == offset, f"{name}.{field}"
        if name in PREFIXES:
            assert c[name] >= size, name
        else:
            assert c[name] == size, name
    # the handlers write `state_type_id` right after the mirrored metadata, when present
    if "XLA_FFI_Metadata.state_type_id" in c:
        assert c["XLA_FFI_Metadata.state_type_id"] == layout["XLA_FFI_Metadata"][0]
