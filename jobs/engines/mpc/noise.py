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

Deviation from the exact discrete Laplace, per cell, in total variation (`deviation_bound`):
each threshold is off by at most 2^-(L+1), so the K + 1 bits are off by at most (K + 1) 2^-(L+1)
together; keeping K digits of G changes it only when G >= 2^K, probability q^(2^K). K and L are
chosen so that q^(2^K) <= 2^-41 and (K + 1) 2^-(L+1) <= 2^-41: at most 2^-40 per cell.
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


def precision_bits(bits: int) -> int:
    """L: the bits of each uniform integer compared with a threshold, (K + 1) 2^-(L+1) <= 2^-41."""
    return _PART_LOG2 - 1 + math.ceil(math.log2(bits + 1))


def deviation_bound(scale: float) -> float:
    """Total variation between one cell's sampled noise and the exact discrete Laplace."""
    bits = geometric_bits(scale)
    return math.exp(-(2**bits) / scale) + (bits + 1) * 2.0 ** -(precision_bits(bits) + 1)


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
    precision = max(precision_bits(bits) for _, _, bits in layout)
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
