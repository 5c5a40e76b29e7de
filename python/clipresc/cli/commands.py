"""The ``clipresc`` command group: ``demo``, ``noise`` and ``perturb``."""

from __future__ import annotations

from typing import Any

import click

from .. import __version__, _errors
from .._args import parse_unreachable
from .._noise import DISTRIBUTIONS
from .chunks import process
from .options import check_bounds, check_eps, check_p, check_parallel, common_options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", prog_name="clipresc", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Exact clipping-aware rescaling of perturbations (see `clipresc COMMAND --help`)."""


@cli.command()
@click.option(
    "--out",
    "out",
    default="clipresc-demo.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the PNG figure.",
)
@click.option("--no-figure", is_flag=True, help="Print the table only.")
def demo(out: str, no_figure: bool) -> None:
    """Naive vs clipping-aware rescaling of noise on built-in sample images.

    Prints the target and achieved L2 sizes for both methods and writes a PNG figure
    (the images side by side and the achieved-size plot). No arguments, no downloads.
    """
    from .. import demo as demo_mod

    click.echo(demo_mod.run())
    if no_figure:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        click.echo(_errors.NO_MATPLOTLIB, err=True)
        return
    try:
        demo_mod.figure(out)
    except OSError as e:
        raise _errors.file_error(out, "cannot write figure", err=e) from None
    click.echo(f"\nfigure: {out}")


@cli.command()
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=True))
@click.argument("out_path", metavar="OUT", type=click.Path())
@common_options
@click.option(
    "--distribution",
    type=click.Choice(list(DISTRIBUTIONS)),
    default="gaussian",
    show_default=True,
    help="Noise distribution (its scale does not matter).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="Non-negative int; without it, fresh entropy (printed, to reproduce).",
)
def noise(in_path: str, out_path: str, **kw: Any) -> None:
    """Add seeded noise of exact size EPS (per vector, after clipping) to IN, write OUT.

    IN is a .npy float array; axis 0 indexes the vectors (a 1-D file is one vector). The
    result equals clipresc.noise(np.load(IN), EPS, seed=SEED, ...).
    """
    _run("noise", in_path, None, out_path, kw)


@cli.command()
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=True))
@click.argument("delta_path", metavar="DELTA", type=click.Path(dir_okay=True))
@click.argument("out_path", metavar="OUT", type=click.Path())
@common_options
def perturb(in_path: str, delta_path: str, out_path: str, **kw: Any) -> None:
    """Write clip(IN + eta * DELTA) with eta giving each vector size EPS after clipping.

    IN and DELTA are .npy float arrays of one shape; axis 0 indexes the vectors.
    """
    _run("perturb", in_path, delta_path, out_path, kw)


def _run(
    kind: str, in_path: str, delta_path: str | None, out_path: str, kw: dict[str, Any]
) -> None:
    check_parallel(kw["workers"], kw["scheduler"], kw["chunk_mb"])
    process(
        kind,
        in_path,
        delta_path,
        out_path,
        eps=check_eps(kw["eps"]),
        p=check_p(kw["p"]),
        bounds=check_bounds(kw["bounds"]),
        distribution=kw.get("distribution", "gaussian"),
        seed=kw.get("seed"),
        unreachable=parse_unreachable(kw["unreachable"]),
        force=kw["force"],
        chunk_mb=kw["chunk_mb"],
        quiet=kw["quiet"],
        workers=kw["workers"],
        scheduler=kw["scheduler"],
    )
