"""Fork safety: a child forked after the parent ran the core on its thread pool gets the
parent's bits instead of hanging in the pool (whose threads a forked child does not have).

The parent and its forked children run in a fresh interpreter (the pytest process has loaded
threaded frameworks, which do not fork cleanly), under a timeout, so a hang fails the test
instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import json, math, multiprocessing as mp, sys
    import numpy as np
    import clipresc

    def work():
        rng = np.random.default_rng(7)
        # 64 rows of 3072: large enough that the core hands the rows to its thread pool
        x = rng.uniform(0, 1, (64, 3072)).astype(np.float32)
        x[:, ::7] = 1.0
        d = rng.normal(size=x.shape).astype(np.float32)
        # one long row: the blocks of a row go to the pool too
        xl = rng.uniform(0, 1, (1, 600_000))
        dl = rng.normal(size=xl.shape)
        out = {}
        for p in (1.0, 2.0, 3.0, math.inf):
            out[f"noise p={p}"] = clipresc.noise(x, 2.0, p=p, seed=11)
            out[f"perturb p={p}"] = clipresc.perturb(x, d, 2.0, p=p)
            out[f"scale long p={p}"] = clipresc.scale(xl, dl, 30.0, p=p)
        return {k: v.tobytes().hex() for k, v in out.items()}

    def child(queue):
        queue.put(work())

    if __name__ == "__main__":
        parent = work()  # starts the pool in this process
        ctx = mp.get_context("fork")
        results = []
        for _ in range(2):  # a second child, forked after the first came back
            queue = ctx.Queue()
            proc = ctx.Process(target=child, args=(queue,))
            proc.start()
            results.append(queue.get())
            proc.join()
            results[-1]["exitcode"] = proc.exitcode
        again = work()  # the parent's pool still works after forking
        json.dump({"parent": parent, "children": results, "again": again}, sys.stdout)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork exists on POSIX systems only")
def test_forked_child_matches_the_parent_bitwise(tmp_path):
    script = tmp_path / "fork_after_use.py"
    script.write_text(_SCRIPT)
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=240,
            env=os.environ.copy(),
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a child forked after the core ran in the parent hung (rayon pool)")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    parent = got["parent"]
    assert len(parent) == 12
    for child in got["children"]:
        assert child.pop("exitcode") == 0
        assert child.keys() == parent.keys()
        for key, bits in parent.items():
            assert child[key] == bits, key
    assert got["again"] == parent
