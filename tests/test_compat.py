"""``clipresc.compat.l2_clipping_aware_rescaling`` against the paper's reference function
itself (``foolbox.external.clipping_aware_rescaling``) on the reference's own kinds of input:
NumPy, PyTorch, JAX and TensorFlow eager arrays, raw and wrapped in EagerPy tensors."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import pytest

from clipresc.compat import l2_clipping_aware_rescaling as ours

ref_module = pytest.importorskip("foolbox.external.clipping_aware_rescaling")
ref = ref_module.l2_clipping_aware_rescaling
ep = pytest.importorskip("eagerpy")


def test_same_signature() -> None:
    mine, theirs = inspect.signature(ours), inspect.signature(ref)
    assert [(p.name, p.kind, p.default) for p in mine.parameters.values()] == [
        (p.name, p.kind, p.default) for p in theirs.parameters.values()
    ]


def _kinds() -> list[tuple[str, Callable[[np.ndarray], Any], Callable[[Any], np.ndarray]]]:
    out: list[tuple[str, Callable[[np.ndarray], Any], Callable[[Any], np.ndarray]]] = [
        ("numpy", lambda a: a, np.asarray),
        ("eagerpy-numpy", ep.astensor, lambda t: np.asarray(t.raw)),
    ]
    try:
        import torch

        out += [
            ("torch", torch.from_numpy, lambda t: t.numpy()),
            ("eagerpy-torch", lambda a: ep.astensor(torch.from_numpy(a)), lambda t: t.raw.numpy()),
        ]
    except ImportError:  # pragma: no cover - torch is in requirements-dev.txt
        pass
    try:
        import jax.numpy as jnp

        out += [("jax", jnp.asarray, np.asarray)]
    except ImportError:  # pragma: no cover
        pass
    try:
        import tensorflow as tf

        out += [
            ("tensorflow", tf.convert_to_tensor, lambda t: t.numpy()),
            ("eagerpy-tf", lambda a: ep.astensor(tf.convert_to_tensor(a)), lambda t: t.raw.numpy()),
        ]
    except ImportError:  # pragma: no cover
        pass
    return out


KINDS = _kinds()


@pytest.mark.parametrize("kind", KINDS, ids=[k[0] for k in KINDS])
@pytest.mark.parametrize("shape", [(8, 3, 6, 6), (5, 40), (12,)], ids=str)
@pytest.mark.parametrize("eps", [0.05, 0.8, 4.0, 1e3], ids=str)  # 1e3 is never reachable
def test_matches_the_reference(kind: Any, shape: tuple[int, ...], eps: float) -> None:
    name, conv, back = kind
    rng = np.random.default_rng(len(shape) + int(eps * 100))
    x = rng.uniform(0, 1, shape).astype(np.float32)
    delta = rng.standard_normal(shape).astype(np.float32)
    a, b = (0.0, 1.0) if len(shape) != 2 else (-0.5, 1.5)
    x = (a + (b - a) * x).astype(np.float32)
    want = ref(conv(x), conv(delta), eps, a=a, b=b)
    got = ours(conv(x), conv(delta), eps, a=a, b=b)
    assert type(got) is type(want), name
    w, g = back(want), back(got)
    assert g.shape == w.shape == (shape[0],) + (1,) * (len(shape) - 1)
    assert g.dtype == w.dtype == np.float32
    np.testing.assert_allclose(g, w, rtol=2e-5)
    # and it is exact: the clipped perturbation has the size asked for (or the largest one)
    moved = np.clip(x + g * delta, a, b) - x
    size = np.sqrt(np.sum(moved.reshape(shape[0], -1).astype(np.float64) ** 2, axis=1))
    s = np.where(delta > 0, b - x, x - a).reshape(shape[0], -1).astype(np.float64)
    reach = np.minimum(eps, np.sqrt(np.sum(s**2, axis=1)))
    np.testing.assert_allclose(size, reach, rtol=1e-5)


def test_eps_zero_gives_zero_where_the_reference_may_not() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 50)).astype(np.float32)
    d = rng.standard_normal(x.shape).astype(np.float32)
    assert np.all(ours(x, d, 0.0) == 0.0)
    w = ref(x, d, 0.0)
    assert np.all(np.isnan(w) | (np.abs(w) < 1e-3))


def test_foolbox_attack_runs_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    fb = pytest.importorskip("foolbox")
    import foolbox.attacks.additive_noise as additive_noise

    model = fb.PyTorchModel(torch.nn.Flatten().eval(), bounds=(0.0, 1.0))
    x = torch.rand(6, 3, 8, 8)
    attack = fb.attacks.L2ClippingAwareAdditiveGaussianNoiseAttack()
    torch.manual_seed(0)
    with_ref = attack.run(model, x, epsilon=3.0)
    monkeypatch.setattr(additive_noise, "l2_clipping_aware_rescaling", ours)
    torch.manual_seed(0)
    with_ours = attack.run(model, x, epsilon=3.0)
    assert type(with_ours) is torch.Tensor
    torch.testing.assert_close(with_ours, with_ref, rtol=1e-5, atol=1e-5)
    sizes = (with_ours - x).flatten(1).double().norm(dim=1)
    torch.testing.assert_close(sizes, torch.full((6,), 3.0, dtype=torch.float64), rtol=1e-5, atol=0)
