"""Draws ``clipping_loses_size.svg``: naive rescale-then-clip against clipresc.

Left: one 2-D point near the edge of the box ``[0, 1]^2``. Right: the L2 size after
clipping for a batch of images, against the size asked for. Both panels are computed with
clipresc when the documentation is built (``docs/conf.py`` runs this script).

Usage: python clipping_loses_size.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import clipresc


def naive(x: np.ndarray, d: np.ndarray, eps: float) -> np.ndarray:
    """Rescale each vector of ``d`` to L2 size ``eps``, add, then clip to ``[0, 1]``."""
    norms = np.linalg.norm(d.reshape(len(d), -1), axis=1).reshape(-1, *[1] * (d.ndim - 1))
    return np.clip(x + eps * d / norms, 0.0, 1.0)


def point_panel(ax: plt.Axes) -> None:
    x = np.array([[0.85, 0.3]])
    d = np.array([[1.0, 0.5]])
    eps = 0.5
    unclipped = x + eps * d / np.linalg.norm(d)
    y_naive = np.clip(unclipped, 0, 1)
    y_exact = clipresc.perturb(x, d, eps)
    ax.add_patch(plt.Rectangle((0, 0), 1, 1, fill=False, lw=1.5, color="0.3"))
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(x[0, 0] + eps * np.cos(t), x[0, 1] + eps * np.sin(t), ":", color="0.5", lw=1)
    ax.annotate("", unclipped[0], x[0], arrowprops={"arrowstyle": "->", "color": "C3"})
    ax.annotate("", y_exact[0], x[0], arrowprops={"arrowstyle": "->", "color": "C0"})
    ax.plot(*unclipped[0], "o", mfc="none", color="C3")
    ax.plot([unclipped[0, 0], y_naive[0, 0]], [unclipped[0, 1], y_naive[0, 1]], "--", color="C3")
    size_naive = float(np.linalg.norm(y_naive - x))
    size_exact = float(np.linalg.norm(y_exact - x))
    ax.plot(*y_naive[0], "o", color="C3", label=f"naive, then clipped: size {size_naive:.2f}")
    ax.plot(*y_exact[0], "s", color="C0", label=f"clipresc.perturb: size {size_exact:.2f}")
    ax.plot(*x[0], "ko")
    ax.annotate("x", x[0], textcoords="offset points", xytext=(-12, -4))
    ax.set_xlim(-0.05, 1.4)
    ax.set_ylim(-0.05, 1.05)
    ax.set_aspect("equal")
    ax.set_title(f"a point near the edge of [0, 1]², eps = {eps}")
    ax.legend(loc="upper left", fontsize=8)


def batch_panel(ax: plt.Axes) -> None:
    rng = np.random.default_rng(0)
    # image-like data: many pixels near 0 or 1, where clipping bites
    x = rng.beta(0.6, 0.6, (64, 3, 32, 32))
    d = rng.standard_normal(x.shape)
    eps_values = np.linspace(0.0, 30.0, 31)
    naive_sizes = [
        np.linalg.norm((naive(x, d, e) - x).reshape(64, -1), axis=1).mean() for e in eps_values
    ]
    exact_sizes = [
        np.linalg.norm((clipresc.perturb(x, d, e) - x).reshape(64, -1), axis=1).mean()
        for e in eps_values
    ]
    ax.plot(eps_values, eps_values, ":", color="0.5", label="size asked for")
    ax.plot(eps_values, naive_sizes, color="C3", label="naive rescale, then clip")
    ax.plot(eps_values, exact_sizes, "s", ms=3, color="C0", label="clipresc.perturb")
    ax.set_xlabel("eps (L2 size asked for)")
    ax.set_ylabel("L2 size after clipping (mean of 64 images)")
    ax.set_title("64 images 3x32x32, Gaussian directions")
    ax.legend(loc="upper left", fontsize=8)


def main(out_dir: str) -> None:
    plt.rcParams["svg.hashsalt"] = "clipresc"  # the same file on every build
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    point_panel(left)
    batch_panel(right)
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "clipping_loses_size.svg", metadata={"Date": None})
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1])
