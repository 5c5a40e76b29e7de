"""``.npy`` files for the ``clipresc`` command: inputs memory-mapped by rows, outputs
written through a temporary file that replaces OUT only when complete."""

from __future__ import annotations

import codecs
import contextlib
import errno
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _errors


@dataclass(frozen=True)
class NpyInput:
    """A C-ordered ``.npy`` file: where its data starts, its dtype and shape."""

    path: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    offset: int

    @property
    def rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:] if len(self.shape) > 1 else self.shape

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    def rows_view(self, start: int, stop: int) -> np.ndarray[Any, Any]:
        """Rows ``start:stop`` memory-mapped read-only (unmapped when the view is dropped)."""
        shape = (stop - start, *self.row_shape) if len(self.shape) > 1 else self.shape
        if math.prod(shape) == 0:
            return np.empty(shape, dtype=self.dtype)
        return np.memmap(
            self.path,
            dtype=self.dtype,
            mode="r",
            offset=self.offset + start * self.row_bytes,
            shape=shape,
        )


NPY_MAGIC = b"\x93NUMPY"


def not_npy_reason(head: bytes) -> str | None:
    """Why a file starting with ``head`` (its first bytes) is no ``.npy`` file; ``None`` when
    it starts like one. NumPy itself would try such a file as a pickle and report
    "pickled (object) data", which says nothing useful about a text file.

    >>> print(not_npy_reason(NPY_MAGIC + b"\\x01\\x00"))
    None
    >>> not_npy_reason(b"0.5 0.25\\n1 0\\n")
    'it holds text (np.loadtxt reads text; save arrays with np.save)'
    >>> not_npy_reason(b"PK\\x03\\x04")
    'it is a zip archive (an .npz file?); save one array with np.save'
    """
    if head.startswith(NPY_MAGIC):
        return None
    if not head:
        return _errors.NOT_NPY_REASONS["empty"]
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _errors.NOT_NPY_REASONS["zip"]
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(head)
    if all(c.isprintable() or c in "\t\n\r" for c in text) and "\ufffd" not in text:
        return _errors.NOT_NPY_REASONS["text"]
    return _errors.NOT_NPY_REASONS["header"]


def open_input(path: str, name: str) -> NpyInput:
    """Check that ``path`` is a readable ``.npy`` file of a float dtype, C-ordered."""
    p = Path(path)
    if not p.exists():
        raise _errors.file_error(path, "missing")
    if p.is_dir():
        raise _errors.file_error(path, "directory")
    try:
        with open(path, "rb") as f:
            reason = not_npy_reason(f.read(512))
        if reason is not None:
            raise _errors.file_error(path, "not npy", reason=reason)
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except PermissionError:
        raise _errors.file_error(path, "permission") from None
    except (ValueError, OSError, EOFError) as e:
        raise _errors.file_error(path, "unreadable", err=e) from None
    if not isinstance(a, np.memmap):
        raise _errors.file_error(path, "not memmap")
    try:
        dt = a.dtype
        if dt.kind != "f" or dt.itemsize > 8:
            raise _errors.npy_not_float(path, name, str(dt))
        if a.ndim == 0:
            raise _errors.file_error(path, "no dimensions", name=name)
        if not a.flags.c_contiguous:
            raise _errors.file_error(path, "fortran")
        return NpyInput(path, dt, tuple(a.shape), int(a.offset))
    finally:
        del a


class AtomicOutput:
    """A ``.npy`` file written through a temporary file in OUT's directory, renamed over OUT
    only by :meth:`commit`; :meth:`discard` (or an exception in the ``with`` block) removes
    it. The data area is preallocated, so a full disk fails before any computing."""

    def __init__(self, path: str, dtype: np.dtype[Any], shape: tuple[int, ...], force: bool):
        out = Path(path)
        if out.is_dir():
            raise _errors.file_error(path, "out directory")
        if out.exists() and not force:
            raise _errors.file_error(path, "exists")
        parent = out.parent
        if not parent.is_dir():
            raise _errors.file_error(path, "no parent", parent=str(parent))
        self.path = str(out)
        self.dtype = dtype
        self.shape = shape
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=parent)
        except OSError as e:
            raise _errors.file_error(path, "cannot create", err=e) from None
        self.committed = False
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
            with os.fdopen(fd, "wb", closefd=False) as f:
                header = {
                    "descr": np.lib.format.dtype_to_descr(dtype),
                    "fortran_order": False,
                    "shape": shape,
                }
                np.lib.format.write_array_header_1_0(f, header)
                self.offset = f.tell()
            total = self.offset + math.prod(shape) * dtype.itemsize
            try:
                os.posix_fallocate(fd, 0, total)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    raise
                os.ftruncate(fd, total)  # the filesystem cannot preallocate
        except OSError as e:
            os.close(fd)
            self.discard()
            raise _errors.file_error(path, "cannot write", err=e) from None
        except BaseException:
            os.close(fd)
            self.discard()
            raise
        os.close(fd)

    def commit(self) -> None:
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)
        self.committed = True

    def discard(self) -> None:
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n
