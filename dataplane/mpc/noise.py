"""Discrete Laplace noise sampled inside MPC, from MPyC's secret random bits.

The discrete Laplace with scale s has pmf (1 - q) / (1 + q) * q^|x| on the integers, q = e^(-1/s)
(what OpenDP's `make_laplace` adds on an integer domain). It is X = (2S - 1) * Z * (1 + G) with
independent parts: a fair sign bit S, a Bernoulli Z with P(Z = 1) = 2q / (1 + q) (X is not 0) and
a geometric G with P(G = k) = (1 - q) q^k (|X| - 1 when X is not 0). The binary digits of G are
independent Bernoulli bits, P(digit i = 1) = q^(2^i) / (1 + q^(2^i)). So, per cell, 1 + K secret
Bernoulli bits (Z and K digits of G); each is a secret uniform L-bit integer r (L secret random
bits from MPyC) compared with a public threshold T = round(p * 2^L): [r < T]. Comparing with a
public number is a suffix product of the bits [r_k == T_k], one round of secure multiplications
per bit of r, vectorised across every Bernoulli bit of every cell; then two more rounds for
Z * (1 + G) and the sign. Nothing is opened but what MPyC's random-bit protocol opens (squares
of fresh random values, independent of everything else).

Deviation from the exact discrete Laplace, per cell, in total variation (`deviation_bound`,
computed from the thresholds actually used, not assumed): the sum over the K + 1 bits of
|p - T / 2^L|, plus G's tail beyond K digits, q^(2^K). K is the fewest digits with
q^(2^K) <= 2^-41. L follows the scale (`precision_bits`): enough that the rounding adds at most
2^-41 in all ((K + 1) 2^-(L+1) <= 2^-41), and that the smallest probability the bits must
carry, P(X = 0) = (1 - q) / (1 + q) (about 1 / (2s) at a large scale s), keeps a relative
precision of 2^-41, so no threshold rounds to 0 or to 2^L whatever the scale: 46 bits at
s = 10, 89 at s = 10^14. The bound is at most 2^-40 per cell at every scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal, localcontext
from typing import Any

import numpy as np

DEVIATION_LOG2 = 40  # per cell, total variation <= 2^-DEVIATION_LOG2
_PART_LOG2 = DEVIATION_LOG2 + 1  # half for G's tail, half for the thresholds' rounding


def geometric_bits(scale: float) -> int:
    """K: the fewest binary digits of G with q^(2^K) <= 2^-41, i.e. 2^K >= s * 41 ln 2."""
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"A discrete Laplace scale is positive and finite, not {scale}.")
    bits = max(1, math.ceil(math.log2(scale * _PART_LOG2 * math.log(2))))
    while math.exp(-(2**bits) / scale) > 2.0**-_PART_LOG2:  # log2's rounding, checked
        bits += 1
    return bits


def zero_probability(scale: float) -> float:
    """P(X = 0) = (1 - q) / (1 + q) = tanh(1 / (2s))."""
    return math.tanh(1 / (2 * scale))


def precision_bits(scale: float, bits: int) -> int:
    """L: the bits of each uniform integer compared with a threshold. The rounding of the K + 1
    thresholds adds at most 2^-41 in total variation, (K + 1) 2^-(L+1) <= 2^-41, and P(X = 0),
    the smallest complement of any bit's probability, keeps a relative precision of 2^-41:
    2^-(L+1) <= 2^-42 P(X = 0). With L fixed, a large scale rounds P(Z = 1) up to 1, a
    threshold of 2^L that the L-bit comparison reads as 0: no noise at all."""
    rounding = _PART_LOG2 - 1 + math.ceil(math.log2(bits + 1))
    relative = _PART_LOG2 + math.ceil(-math.log2(zero_probability(scale)))
    return max(rounding, relative)


def deviation_bound(scale: float) -> float:
    """Total variation between one cell's sampled noise and the exact discrete Laplace, from
    the thresholds the sampler uses: each Bernoulli bit is off by |p - T / 2^L|, and G's digits
    beyond K are dropped (probability q^(2^K))."""
    bits = geometric_bits(scale)
    precision = precision_bits(scale, bits)
    exact = probabilities(scale, bits)
    rounded = thresholds(scale, bits, precision)
    with localcontext() as context:
        context.prec = 80
        rounding = sum(
            abs(Decimal(t) / Decimal(2) ** precision - p)
            for t, p in zip(rounded, exact, strict=True)
        )
        tail = (-(Decimal(2) ** bits) / Decimal(scale)).exp()
        return float(rounding + tail)


def probabilities(scale: float, bits: int) -> list[Decimal]:
    """P(Z = 1), then P(digit i of G = 1) for i < K, to 80 significant digits."""
    with localcontext() as context:
        context.prec = 80
        q = (-1 / Decimal(scale)).exp()
        result = [2 * q / (1 + q)]
        for i in range(bits):
            power = (-Decimal(2**i) / Decimal(scale)).exp()
            result.append(power / (1 + power))
        return result


def thresholds(scale: float, bits: int, precision: int) -> list[int]:
    """T = round(p * 2^L) for each of the cell's Bernoulli bits (`probabilities`)."""
    with localcontext() as context:
        context.prec = 80
        return [int((p * 2**precision).to_integral_value()) for p in probabilities(scale, bits)]


def discrete_laplace_pmf(x: np.ndarray, scale: float) -> np.ndarray:
    q = math.exp(-1 / scale)
    return (1 - q) / (1 + q) * q ** np.abs(x)


async def sample(mpc: Any, secure_field: Any, blocks: Sequence[tuple[float, int]]) -> Any:
    """Secret-shared discrete Laplace noise as one secure field array: for each (scale, cells)
    block in turn, that many cells of that scale.

    `mpc` is the party's MPyC runtime, passed in: this module never imports it. All parties
    must call this with the same blocks (they are public: the plan's scales)."""
    field = secure_field.field
    layout = [(scale, cells, geometric_bits(scale)) for scale, cells in blocks]
    precision = max(precision_bits(scale, bits) for scale, _, bits in layout)
    # One entry per Bernoulli bit: block by block, cell by cell, Z then G's K digits.
    entries = np.concatenate(
        [
            np.tile(np.array(thresholds(scale, bits, precision), dtype=object), cells)
            for scale, cells, bits in layout
        ]
    )
    count = len(entries)
    wanted = np.array(
        [[(int(t) >> k) & 1 for t in entries] for k in range(precision)], dtype=object
    )
    r = mpc.np_random_bits(secure_field, precision * count).reshape(precision, count)
    below = prefix = None  # [r < T] so far; prod over j > k of [r_j == T_j]
    for k in range(precision - 1, -1, -1):
        equal = r[k] * field.array(2 * wanted[k] - 1) + field.array(1 - wanted[k])
        both = equal if prefix is None else prefix * equal
        step = ((1 if prefix is None else prefix) - both) * field.array(wanted[k])
        below = step if below is None else below + step
        prefix = both
    assert below is not None  # precision_bits is over 40: the loop ran
    nonzero, magnitude, start = [], [], 0
    for _, cells, bits in layout:
        block = below[start : start + cells * (bits + 1)].reshape(cells, bits + 1)
        start += cells * (bits + 1)
        nonzero.append(block[:, 0])
        powers = np.array([2**i for i in range(bits)], dtype=object)
        magnitude.append((block[:, 1:] * field.array(np.tile(powers, (cells, 1)))).sum(axis=1))
    nonzero = mpc.np_concatenate(nonzero)
    magnitude = mpc.np_concatenate(magnitude) + 1
    sign = mpc.np_random_bits(secure_field, len(nonzero)) * 2 - 1
    return sign * (nonzero * magnitude)
