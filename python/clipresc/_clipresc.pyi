"""Type stubs for the compiled core (``rust/py``)."""

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "InputError",
    "jax_ffi_calls",
    "jax_ffi_in_place_calls",
    "jax_ffi_project_calls",
    "jax_ffi_targets",
    "newton_adversary",
    "noise_into",
    "perturb_into",
    "perturb_vjp_into",
    "project_into",
    "project_searches",
    "project_vjp_into",
    "sample_into",
    "scale_into",
    "scale_vjp_into",
    "solve_stats",
    "xla_ffi_layout",
]

class InputError(ValueError):
    """Invalid input found by the core: args are (argument, problem, count, first flat index)."""

def scale_into(
    x: npt.NDArray[Any],
    delta: npt.NDArray[Any],
    lower: float | npt.NDArray[Any],
    upper: float | npt.NDArray[Any],
    eps: float | npt.NDArray[np.float64],
    p: float,
    eta_out: npt.NDArray[Any],
) -> tuple[int, int]: ...
def perturb_into(
    x: npt.NDArray[Any],
    delta: npt.NDArray[Any],
    lower: float | npt.NDArray[Any],
    upper: float | npt.NDArray[Any],
    eps: float | npt.NDArray[np.float64],
    p: float,
    y_out: npt.NDArray[Any],
    eta_out: npt.NDArray[Any],
) -> tuple[int, int]: ...
def solve_stats(
    x: npt.NDArray[np.float64],
    delta: npt.NDArray[np.float64],
    eps: float,
    p: float,
    lower: float,
    upper: float,
    max_newton_passes: int = 4,
) -> list[tuple[float, int, bool]]: ...
def newton_adversary(
    n: int, p: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]: ...
def noise_into(
    x: npt.NDArray[Any],
    lower: float | npt.NDArray[Any],
    upper: float | npt.NDArray[Any],
    eps: float | npt.NDArray[np.float64],
    p: float,
    distribution: str,
    seed: bytes,
    row_offset: int,
    y_out: npt.NDArray[Any],
    eta_out: npt.NDArray[Any],
) -> tuple[int, int]: ...
def sample_into(distribution: str, seed: bytes, row_offset: int, out: npt.NDArray[Any]) -> None: ...
def scale_vjp_into(
    x: npt.NDArray[Any],
    delta: npt.NDArray[Any],
    lower: float | npt.NDArray[Any],
    upper: float | npt.NDArray[Any],
    eps: float | npt.NDArray[np.float64],
    p: float,
    etabar: npt.NDArray[Any],
    x_grad: npt.NDArray[Any],
    delta_grad: npt.NDArray[Any],
    eps_grad: npt.NDArray[np.float64],
    lower_grad: npt.NDArray[Any] | None = None,
    upper_grad: npt.NDArray[Any] | None = None,
    eta: npt.NDArray[Any] | None = None,
) -> tuple[int, int]: ...
def perturb_vjp_into(
    x: npt.NDArray[Any],
    delta: npt.NDArray[Any],
    lower: float | npt.NDArray[Any],
    upper: float | npt.NDArray[Any],
    eps: float | npt.NDArray[np.float64],
    p: float,
    ybar: npt.NDArray[Any],
    x_grad: npt.NDArray[Any],
    delta_grad: npt.NDArray[Any],
    eps_grad: npt.NDArray[np.float64],
    lower_grad: npt.NDArray[Any] | None = None,
    upper_grad: npt.NDArray[Any] | None = None,
    eta: npt.NDArray[Any] | None = None,
) -> tuple[int, int]: ...

# XLA FFI handlers for JAX on CPU (rust/py/src/jax_ffi.rs, used by frameworks/_jax_ffi.py)
def jax_ffi_targets() -> dict[str, Any]: ...
def jax_ffi_calls() -> tuple[int, int]: ...
def jax_ffi_in_place_calls() -> int: ...
def jax_ffi_project_calls() -> tuple[int, int]: ...
def xla_ffi_layout() -> tuple[tuple[int, int], dict[str, tuple[int, dict[str, int]]]]: ...

# The exact projection onto the ball and the box (rust/py/src/project.rs)
def project_into(
    x: npt.NDArray[Any],
    z: npt.NDArray[Any],
    lower: float | npt.NDArray[Any],
    upper: float | npt.NDArray[Any],
    eps: float | npt.NDArray[np.float64],
    p: float,
    y_out: npt.NDArray[Any],
    mult_out: npt.NDArray[np.float64] | None = None,
) -> None: ...
def project_vjp_into(
    x: npt.NDArray[Any],
    z: npt.NDArray[Any],
    lower: float | npt.NDArray[Any],
    upper: float | npt.NDArray[Any],
    eps: float | npt.NDArray[np.float64],
    p: float,
    ybar: npt.NDArray[Any],
    x_grad: npt.NDArray[Any],
    z_grad: npt.NDArray[Any],
    eps_grad: npt.NDArray[np.float64],
    mult: npt.NDArray[np.float64] | None = None,
) -> None: ...
def project_searches() -> int: ...
