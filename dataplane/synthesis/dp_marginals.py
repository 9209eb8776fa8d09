"""The DP synthesizer after MST (McKenna, Miklau and Sheldon, "Winning the NIST Contest", 2021).

On the encoded rows (`columns.encode`: one code per category or public bin):
1. measure every 1-way marginal with OpenDP's Gaussian mechanism; as in MST, the codes whose
   noisy count is under 3 standard deviations of the noise are merged into one code per column
   (compression), so that the 2-way tables measured next have fewer, better-filled cells;
2. select the 2-way marginals of a spanning tree privately: Kruskal's algorithm where each of
   the d - 1 rounds picks, with OpenDP's noisy max, among the pairs joining two components, the
   one the current model (independent columns from the noisy 1-way marginals) explains worst:
   score = L1 distance of its true (compressed) 2-way marginal from the model's, minus the L1
   error its Gaussian measurement is expected to have anyway (as in MST);
3. measure the selected 2-way marginals (on the compressed codes) with OpenDP's Gaussian
   mechanism;
4. estimate a graphical model from all noisy marginals with mbi (private-pgm's mirror descent);
5. sample the requested number of rows of compressed codes from the model (a tree: each column
   given its parent), and expand a merged code to one of its original codes in proportion to
   their (clipped) noisy 1-way counts.
Only steps 1 to 3 read the rows, through the OpenDP mechanisms `accounting.dp_cost` calibrated;
the compression, the selection scores' model and steps 4 and 5 use noisy values only.

mbi and JAX are imported here, lazily: JAX runs on the CPU, in float64 (mbi's estimate can stall
in float32 for large counts), without a persistent compilation cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dataplane.synthesis.accounting import DpBudget, gaussian, noisy_max

# Mirror descent steps at the theoretical step size: on the benchmark's 10 columns they reach a
# lower loss than mbi's default (1,000 steps with line search), in about a second, whatever the
# number of rows.
ESTIMATION_ITERATIONS = 20_000
# MST merges the codes whose noisy count is under this many noise standard deviations.
COMPRESSION_THRESHOLD = 3.0


@dataclass
class NoisyMarginals:
    """What the DP run measured: the only statistics of the real rows it ever holds on to.
    `compressed[c][code]` is the compressed code of an original code of column c; the 2-way
    tables are over compressed codes."""

    one_way: dict[str, np.ndarray] = field(default_factory=dict)
    compressed: dict[str, np.ndarray] = field(default_factory=dict)
    two_way: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    selected: list[tuple[str, str]] = field(default_factory=list)

    def compressed_sizes(self) -> dict[str, int]:
        return {name: int(mapping.max()) + 1 for name, mapping in self.compressed.items()}

    def compress(self, codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: self.compressed[name][code] for name, code in codes.items()}


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


def _compression(noisy: np.ndarray, scale: float) -> np.ndarray:
    """Original code -> compressed code: well-supported codes keep their order, the rest share
    the last code."""
    supported = noisy >= COMPRESSION_THRESHOLD * scale
    if supported.all() or (~supported).sum() == 1:
        return np.arange(noisy.size)
    mapping = np.full(noisy.size, supported.sum())
    mapping[supported] = np.arange(supported.sum())
    return mapping


def _distribution(noisy: np.ndarray) -> np.ndarray:
    clipped = np.clip(noisy, 0, None)
    total = clipped.sum()
    return clipped / total if total > 0 else np.full(noisy.shape, 1 / noisy.size)


def _select_tree(
    codes: dict[str, np.ndarray], noisy: NoisyMarginals, budget: DpBudget
) -> list[tuple[str, str]]:
    names = list(codes)
    selection = budget.stage("selection")
    if selection is None:
        return [(names[0], names[1])] if budget.stage("two-way") is not None else []
    two_way = budget.required_stage("two-way")
    sizes = noisy.compressed_sizes()
    one_way = {
        c: np.bincount(noisy.compressed[c], weights=noisy.one_way[c], minlength=sizes[c])
        for c in names
    }
    total = estimated_total(noisy)
    independent = {c: _distribution(one_way[c]) for c in names}
    candidates = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    scores = {}
    for a, b in candidates:
        model = total * np.outer(independent[a], independent[b])
        expected_noise = math.sqrt(2 / math.pi) * two_way.scale * sizes[a] * sizes[b]
        error = float(np.abs(marginal(codes, sizes, (a, b)) - model).sum())
        scores[(a, b)] = error - expected_noise
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
    one_way = budget.required_stage("one-way")
    noisy = NoisyMarginals()
    for name in sizes:
        noisy.one_way[name] = measure(marginal(codes, sizes, (name,)), one_way.scale)
        noisy.compressed[name] = _compression(noisy.one_way[name], one_way.scale)
    compressed = noisy.compress(codes)
    noisy.selected = _select_tree(compressed, noisy, budget)
    for pair in noisy.selected:
        table = marginal(compressed, noisy.compressed_sizes(), pair)
        noisy.two_way[pair] = measure(table, budget.required_stage("two-way").scale)
    return noisy


def estimated_total(noisy: NoisyMarginals) -> float:
    """The number of rows, from the noisy 1-way tables: each table's sum, weighted by the
    inverse of its noise variance (proportional to its number of cells)."""
    sums = [table.sum() for table in noisy.one_way.values()]
    weights = [1 / table.size for table in noisy.one_way.values()]
    return max(1.0, float(np.average(sums, weights=weights)))


def _jax():
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    return jax


def _expand(noisy: NoisyMarginals, name: str, codes: np.ndarray, rng) -> np.ndarray:
    """Compressed codes back to original codes: a merged code becomes one of its members, drawn
    in proportion to their clipped noisy counts."""
    mapping = noisy.compressed[name]
    original = np.empty(codes.size, dtype=np.int32)
    for compressed in range(int(mapping.max()) + 1):
        rows = np.flatnonzero(codes == compressed)
        members = np.flatnonzero(mapping == compressed)
        weights = _distribution(noisy.one_way[name][members])
        original[rows] = rng.choice(members, size=rows.size, p=weights)
    return original


def _conditional(table: np.ndarray) -> np.ndarray:
    """Each row of a 2-way table as a distribution over the second column."""
    table = np.clip(table, 0, None)
    sums = table.sum(axis=1, keepdims=True)
    uniform = np.full(table.shape, 1 / table.shape[1])
    return np.divide(table, sums, out=uniform, where=sums > 0)


def _sample_tree(model, noisy: NoisyMarginals, rows: int, rng) -> dict[str, np.ndarray]:
    """Rows of compressed codes from a tree-structured model: the first column from its
    marginal, then each column given its parent in the tree, from their 2-way marginal."""
    names = list(noisy.one_way)
    root = names[0]
    first = _distribution(np.asarray(model.project((root,)).datavector()))
    data = {root: rng.choice(first.size, size=rows, p=first)}
    pending = list(noisy.selected)
    while pending:
        edge = next(e for e in pending if e[0] in data or e[1] in data)
        pending.remove(edge)
        parent, child = edge if edge[0] in data else edge[::-1]
        conditional = _conditional(np.asarray(model.project((parent, child)).datavector(False)))
        values = np.empty(rows, dtype=np.int64)
        for value in range(conditional.shape[0]):
            where = np.flatnonzero(data[parent] == value)
            values[where] = rng.choice(conditional.shape[1], size=where.size, p=conditional[value])
        data[child] = values
    return data


def _estimate(estimator, domain, loss, total: float):
    """mbi's `Estimator.estimate` loop (no callback, no tolerance), with its start and finish
    compiled as one program each: run eagerly, as `estimate` does, they compile well over a
    hundred small programs, which took most of the run. `_init`, `_multi_step` and `_finalize`
    are the hooks mbi's `Estimator` defines for its subclasses (mbi 2.0.0, pinned)."""
    import jax
    import jax.numpy as jnp
    from mbi.estimation import CALLBACK_EVERY

    state = jax.jit(lambda loss, total: estimator._init(domain, loss, total))(loss, total)
    # `_multi_step` donates its state: start from a copy, as `estimate` does.
    state = jax.tree.map(jnp.copy, state)
    for _ in range(math.ceil(ESTIMATION_ITERATIONS / CALLBACK_EVERY)):
        state = estimator._multi_step(state, loss, total, ())
    return jax.jit(lambda state, total: estimator._finalize(state, total))(state, total)


def sample(
    noisy: NoisyMarginals, budget: DpBudget, *, rows: int, seed: int | None
) -> dict[str, np.ndarray]:
    """Steps 4-5: estimate the graphical model from the noisy marginals and draw `rows` rows of
    codes. Post-processing only: the real rows are not an input.

    Mirror descent runs at the fixed step its convergence theory gives (mbi's own initial step,
    2 / (Lipschitz constant x total)) for ESTIMATION_ITERATIONS steps, without mbi's line search:
    the enclave is a fresh process each time, so JAX compiles the estimator on every run, and
    the line search doubles that compilation, which costs far more than the iterations (see
    also `_estimate`). The
    model is a tree (the selected spanning tree, or one pair, or one column), so its rows are
    drawn directly from its fitted marginals."""
    _jax()
    import mbi
    from mbi import marginal_loss
    from mbi.estimation import MirrorDescent

    names = list(noisy.one_way)
    full = mbi.Domain(names, [noisy.one_way[c].size for c in names])
    sizes = noisy.compressed_sizes()
    domain = mbi.Domain(names, [sizes[c] for c in names])
    one_way = budget.required_stage("one-way")
    measurements = [
        mbi.LinearMeasurement(table.ravel(), (name,), stddev=one_way.scale).compress(
            {name: noisy.compressed[name]}, full
        )
        for name, table in noisy.one_way.items()
    ]
    measurements += [
        mbi.LinearMeasurement(table.ravel(), pair, stddev=budget.required_stage("two-way").scale)
        for pair, table in noisy.two_way.items()
    ]
    total = estimated_total(noisy)
    loss = marginal_loss.from_linear_measurements(measurements, domain)
    estimator = MirrorDescent(stepsize=2.0 / (loss.lipschitz * total))
    model = _estimate(estimator, domain, loss, total)
    rng = np.random.default_rng(seed)
    data = _sample_tree(model, noisy, rows, rng)
    return {name: _expand(noisy, name, data[name], rng) for name in names}
