"""The main job on a built-in default: naive vs clipping-aware rescaling of noise on images.

Run with ``python -m clipresc.demo`` (or ``make demo``). It builds a batch of synthetic
images (smooth gradients with saturated highlights and shadows, like real photos), adds
Gaussian noise rescaled to several L2 sizes, and prints the size each method really delivers
after clipping to ``[0, 1]``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ._api import perturb


def sample_images(batch: int = 8, size: int = 64, seed: int = 0) -> np.ndarray[Any, Any]:
    """Synthetic RGB images in ``[0, 1]``, shape ``(batch, 3, size, size)``, float32.

    About a fifth of the pixels sit exactly at 0 or 1, where naive rescaling loses the most.

    >>> imgs = sample_images(2, 16)
    >>> imgs.shape, bool(imgs.min() >= 0 and imgs.max() <= 1)
    ((2, 3, 16, 16), True)
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = np.empty((batch, 3, size, size), dtype=np.float32)
    for b in range(batch):
        for c in range(3):
            fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * math.pi)
            wave = 0.5 + 0.7 * np.sin(2 * math.pi * (fx * xx + fy * yy) + ph)
            out[b, c] = np.clip(wave + 0.05 * rng.standard_normal((size, size)), 0, 1)
    return out


def naive_perturb(
    x: np.ndarray[Any, Any], delta: np.ndarray[Any, Any], eps: float, p: float = 2.0
) -> np.ndarray[Any, Any]:
    """Rescale then clip: the common approach, which undershoots ``eps``.

    >>> x = np.full((1, 4), 0.9); d = np.ones((1, 4))
    >>> round(float(np.linalg.norm(naive_perturb(x, d, 1.0) - x)), 12)  # asked for 1.0
    0.2
    """
    norms = np.linalg.norm(delta.reshape(len(delta), -1).astype(np.float64), ord=p, axis=1)
    eta = (eps / norms).reshape((-1,) + (1,) * (delta.ndim - 1))
    out: np.ndarray[Any, Any] = np.clip(x + eta * delta, 0.0, 1.0).astype(x.dtype)
    return out


def achieved(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], p: float = 2.0) -> Any:
    """Per-image ``||y - x||_p`` in float64."""
    diff = (y.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    return np.linalg.norm(diff, ord=p, axis=1)


def run(sizes: tuple[float, ...] = (1.0, 5.0, 10.0, 20.0, 40.0), p: float = 2.0) -> str:
    """The demo's table as text: target vs achieved size (mean and worst over the batch).

    >>> "clipresc" in run(sizes=(1.0,))
    True
    """
    x = sample_images()
    delta = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    at_bounds = float(np.mean((x == 0) | (x == 1)))
    lines = [
        f"{len(x)} synthetic images {x.shape[1:]}, {at_bounds:.0%} of pixels at 0 or 1; "
        f"Gaussian noise, L{p:g} sizes after clipping to [0, 1]",
        "",
        f"{'target':>8} | {'naive mean':>10} {'naive worst':>11} | "
        f"{'clipresc mean':>13} {'clipresc worst':>14} {'max rel err':>11}",
        "-" * 78,
    ]
    for eps in sizes:
        naive = achieved(x, naive_perturb(x, delta, eps, p), p)
        t0 = time.perf_counter()
        ours = achieved(x, perturb(x, delta, eps, p=p), p)
        dt = time.perf_counter() - t0
        rel = float(np.max(np.abs(ours - eps) / eps))
        lines.append(
            f"{eps:8.2f} | {naive.mean():10.4f} {naive.min():11.4f} | "
            f"{ours.mean():13.6f} {ours.min():14.6f} {rel:11.1e}  ({dt * 1e3:.1f} ms)"
        )
    lines += [
        "",
        "naive = rescale to eps, then clip (loses size where pixels saturate);",
        "clipresc = rescale so that the size after clipping is exactly eps.",
    ]
    return "\n".join(lines)


def figure(
    path: str,
    sizes: tuple[float, ...] = (1.0, 5.0, 10.0, 20.0, 40.0),
    p: float = 2.0,
    show_eps: float = 20.0,
) -> str:
    """Write a PNG: one sample image, naive and clipresc results at ``show_eps`` side by side,
    and the achieved size against the target for both methods. Needs matplotlib.

    Returns ``path``. Uses matplotlib's Agg canvas directly (no pyplot, no global state).

    >>> import os, tempfile
    >>> out = figure(os.path.join(tempfile.mkdtemp(), "demo.png"), sizes=(1.0, 5.0))
    >>> import pathlib
    >>> pathlib.Path(out).read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = sample_images()
    delta = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    naive = np.array([achieved(x, naive_perturb(x, delta, e, p), p) for e in sizes])
    ours = np.array([achieved(x, perturb(x, delta, e, p=p), p) for e in sizes])

    fig = Figure(figsize=(11, 7), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, height_ratios=(1, 1.1))
    shown = [
        ("original", x[0]),
        (f"naive, asked L{p:g} = {show_eps:g}", naive_perturb(x, delta, show_eps, p)[0]),
        (f"clipresc, asked L{p:g} = {show_eps:g}", perturb(x, delta, show_eps, p=p)[0]),
    ]
    for k, (title, img) in enumerate(shown):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(np.transpose(img, (1, 2, 0)), interpolation="nearest")
        if k:
            size = float(achieved(x[:1], img[None], p)[0])
            title += f"\ngot {size:.2f}"
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[1, :])
    s = np.array(sizes)
    ax.plot(s, s, color="0.6", linestyle=":", label="target")
    ax.fill_between(s, naive.min(axis=1), naive.max(axis=1), color="C3", alpha=0.2)
    ax.plot(s, naive.mean(axis=1), "o-", color="C3", label="naive: rescale, then clip")
    ax.plot(s, ours.mean(axis=1), "s--", color="C0", label="clipresc (exact)")
    ax.set_xlabel(f"target L{p:g} size")
    ax.set_ylabel("achieved size after clipping (mean, min-max band)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.suptitle(f"{len(x)} synthetic images: Gaussian noise at a target size, clipped to [0, 1]")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def main() -> None:
    """Print the demo table."""
    print(run())


if __name__ == "__main__":
    main()
