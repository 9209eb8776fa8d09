"""The DP synthesizer after MST (McKenna, Miklau and Sheldon, "Winning the NIST Contest", 2021).

On the encoded rows (`columns.encode`: one code per category or public bin):
1. measure every 1-way marginal with OpenDP's Gaussian mechanism;
2. select the 2-way marginals of a spanning tree privately: Kruskal's algorithm where each of
   the d - 1 rounds picks, with OpenDP's noisy max, among the pairs joining two components, the
   one the current model (independent columns from the noisy 1-way marginals) explains worst:
   score = L1 distance of its true 2-way marginal from the model's, minus the L1 error its
   Gaussian measurement is expected to have anyway (as in MST);
3. measure the selected 2-way marginals with OpenDP's Gaussian mechanism;
4. estimate a graphical model from all noisy marginals with mbi (private-pgm's mirror descent);
5. sample the requested number of rows from the model.
Only steps 1 to 3 read the rows, through the OpenDP mechanisms `accounting.dp_cost` calibrated;
steps 4 and 5 are post-processing of the noisy marginals. MST's compression of rare categories
is left out: the domains are public and small (at most 16 bins).

mbi and JAX are imported here, lazily: JAX runs on the CPU, in float64 (mbi's estimate can stall
in float32 for large counts), without a persistent compilation cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from jobs.synthesis.accounting import DpBudget, gaussian, noisy_max

# Mirror descent iterations: enough for a tree of marginals to converge (the loss no longer
# moves), and the run time stays independent of the number of rows.
ESTIMATION_ITERATIONS = 1000


@dataclass
class NoisyMarginals:
    """What the DP run measured: the only statistics of the real rows it ever holds on to."""

    one_way: dict[str, np.ndarray] = field(default_factory=dict)
    two_way: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    selected: list[tuple[str, str]] = field(default_factory=list)


def marginal(
    codes: dict[str, np.ndarray], sizes: dict[str, int], clique: Sequence[str]
) -> np.ndarray:
    """The exact count table of `clique` (shape: the clique's sizes)."""
    shape = tuple(sizes[c] for c in clique)
    flat = np.ravel_multi_index(tuple(codes[c].astype(np.int64) for c in clique), shape)
    return np.bincount(flat, minlength=math.prod(shape)).reshape(shape)


def measure(counts: np.ndarray, scale: float) -> np.ndarray:
    """The count table plus OpenDP's discrete Gaussian noise at `scale`, same shape."""
    noisy = gaussian(scale)([int(c) for c in counts.ravel()])
    return np.asarray(noisy, dtype=np.float64).reshape(counts.shape)


def _distribution(noisy: np.ndarray) -> np.ndarray:
    clipped = np.clip(noisy, 0, None)
    total = clipped.sum()
    return clipped / total if total > 0 else np.full(noisy.shape, 1 / noisy.size)


def _select_tree(
    codes: dict[str, np.ndarray],
    sizes: dict[str, int],
    one_way: dict[str, np.ndarray],
    budget: DpBudget,
) -> list[tuple[str, str]]:
    names = list(sizes)
    selection, two_way = budget.stage("selection"), budget.stage("two-way")
    if selection is None:
        return [(names[0], names[1])] if two_way is not None else []
    total = float(np.mean([max(t.sum(), 1.0) for t in one_way.values()]))
    independent = {c: _distribution(one_way[c]) for c in names}
    candidates = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    scores = {}
    for a, b in candidates:
        model = total * np.outer(independent[a], independent[b])
        expected_noise = math.sqrt(2 / math.pi) * two_way.scale * sizes[a] * sizes[b]
        scores[(a, b)] = (
            float(np.abs(marginal(codes, sizes, (a, b)) - model).sum()) - expected_noise
        )
    component = {c: c for c in names}

    def root(c: str) -> str:
        while component[c] != c:
            c = component[c]
        return c

    select = noisy_max(selection.scale)
    tree = []
    for _ in range(selection.count):
        open_pairs = [p for p in candidates if root(p[0]) != root(p[1])]
        a, b = open_pairs[select([scores[p] for p in open_pairs])]
        component[root(a)] = root(b)
        tree.append((a, b))
    return tree


def measure_marginals(
    codes: dict[str, np.ndarray], sizes: dict[str, int], budget: DpBudget
) -> NoisyMarginals:
    """Steps 1-3: every noisy value the DP method computes from the rows."""
    one_way_stage = budget.stage("one-way")
    noisy = NoisyMarginals()
    for name in sizes:
        noisy.one_way[name] = measure(marginal(codes, sizes, (name,)), one_way_stage.scale)
    noisy.selected = _select_tree(codes, sizes, noisy.one_way, budget)
    two_way = budget.stage("two-way")
    for pair in noisy.selected:
        noisy.two_way[pair] = measure(marginal(codes, sizes, pair), two_way.scale)
    return noisy


def _jax():
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    return jax


def sample(
    noisy: NoisyMarginals,
    sizes: dict[str, int],
    budget: DpBudget,
    *,
    rows: int,
    seed: int | None,
) -> dict[str, np.ndarray]:
    """Steps 4-5: estimate the graphical model from the noisy marginals and draw `rows` rows of
    codes. Post-processing only: the real rows are not an input."""
    _jax()
    import mbi
    from mbi.estimation import MirrorDescent

    domain = mbi.Domain(list(sizes), [sizes[c] for c in sizes])
    one_way, two_way = budget.stage("one-way"), budget.stage("two-way")
    measurements = [
        mbi.LinearMeasurement(table.ravel(), (name,), stddev=one_way.scale)
        for name, table in noisy.one_way.items()
    ]
    measurements += [
        mbi.LinearMeasurement(table.ravel(), pair, stddev=two_way.scale)
        for pair, table in noisy.two_way.items()
    ]
    model = MirrorDescent().estimate(domain, measurements, iters=ESTIMATION_ITERATIONS)
    # mbi samples with NumPy's global generator: seed it for this call only, then restore it.
    state = np.random.get_state()
    try:
        if seed is not None:
            np.random.seed(seed)
        data = model.synthetic_data(rows=rows).to_dict()
    finally:
        np.random.set_state(state)
    return {name: np.asarray(data[name], dtype=np.int32) for name in sizes}
