"""The options of ``clipresc noise`` / ``perturb`` and their checks."""

from __future__ import annotations

import math
from typing import Any, Callable

import click

from .. import _errors
from .._args import parse_p

DEFAULT_CHUNK_MB = 32


def check_eps(eps: float) -> float:
    if not (math.isfinite(eps) and eps >= 0):
        raise click.BadParameter(_errors.bad_option("--eps", eps), param_hint="--eps")
    return eps


def check_p(p: float) -> float:
    try:
        return parse_p(p)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--p") from None


def check_bounds(bounds: tuple[float, float]) -> tuple[float, float] | None:
    lo, hi = bounds
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise click.BadParameter(_errors.bad_option("--bounds", lo, hi), param_hint="--bounds")
    if lo == -math.inf and hi == math.inf:
        return None
    return lo, hi


def check_parallel(workers: int | None, scheduler: str | None, chunk_mb: float) -> None:
    if workers is not None and scheduler is not None:
        raise click.UsageError(_errors.OPTIONS_EXCLUSIVE)
    if workers is not None and workers < 1:
        raise click.BadParameter(_errors.bad_option("--workers", workers), param_hint="--workers")
    if not (chunk_mb > 0 and math.isfinite(chunk_mb)):
        raise click.BadParameter(
            _errors.bad_option("--chunk-mb", chunk_mb), param_hint="--chunk-mb"
        )


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--eps", type=float, required=True, help="Size after clipping."),
        click.option(
            "--p", "p", type=float, default=2.0, show_default=True, help="Norm: p > 0 or inf."
        ),
        click.option(
            "--bounds",
            type=(float, float),
            default=(0.0, 1.0),
            show_default=True,
            metavar="LOWER UPPER",
            help="Data domain; '-inf inf' for no clipping.",
        ),
        click.option(
            "--unreachable",
            type=click.Choice(["saturate", "raise"]),
            default="saturate",
            show_default=True,
            help="When eps exceeds the largest reachable size: saturate, or fail.",
        ),
        click.option("--force", is_flag=True, help="Overwrite OUT if it exists."),
        click.option(
            "--chunk-mb",
            type=float,
            default=DEFAULT_CHUNK_MB,
            show_default=True,
            help="MiB of input per chunk (peak memory is a few chunks).",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr."),
        click.option(
            "--workers",
            type=int,
            default=None,
            help="Run on a local Dask cluster of N worker processes.",
        ),
        click.option(
            "--scheduler",
            default=None,
            metavar="ADDRESS",
            help="Run on an existing Dask cluster (e.g. tcp://host:8786); "
            "the files must be visible to its workers at the same paths.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f
