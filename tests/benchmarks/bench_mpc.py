"""The MPC engine's parts against plain NumPy doing the same group-by.

Three data owners with 10^4, 10^5 and then 10^6 rows each: a key out of 50 public groups and an
integer amount in [0, 1000]. The query: per group, COUNT(*) and SUM(amount), ε = 1 split evenly,
scales from OpenDP's calibration (jobs/privacy/calibration.py), three compute parties over TLS
with this deployment's kind of credentials (a scratch MPC CA). Per size:

- owner side: each owner pre-aggregates its rows into the 50 groups (clamped amounts), splits
  the 100 cells into Shamir shares and seals one share vector to each party (all three owners);
- the MPC part alone, from input shares to output shares (the slowest party's), and within it
  the noise sampling alone; bytes the parties' MPyC messages carried (sent, all parties);
- the party processes' wall time (start, TLS connection, MPC, exit);
- plain NumPy: the three owners' bincounts and their sum, in the clear, without noise; the
  ratio of the MPC part and of owner side + parties to it.

Peak memory: the largest party process (its VmHWM) and this process (owners' data included). The
end-to-end line (from running an approved query to its released result through the job
runner) belongs to the runner's benchmark: call `measure_mpc_part` for the engine's own figures.
"""

from __future__ import annotations

import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.test.utils import override_settings

from jobs.engines.mpc import sharing
from jobs.engines.mpc.certificates import ensure_credentials, party_private_key, party_public_key
from jobs.engines.mpc.parties import PartyOutput, PartySpec, party_addresses, start_party
from jobs.privacy.calibration import laplace_scale

SIZES = (10**4, 10**5, 10**6)
OWNERS = 3
GROUPS = 50
UPPER = 1000
EPSILON = 1.0
SITES = ["eu-paris-mpc", "ch-geneva-mpc", "uk-manchester-mpc"]
MEASURES = ["count", "sum(amount)"]
TIMEOUT = 300


@dataclass
class MpcPartFigures:
    owner_seconds: float  # pre-aggregation + sharing + sealing, all owners
    mpc_seconds: float  # input shares to output shares, slowest party
    noise_seconds: float  # the noise sampling alone, slowest party
    parties_wall_seconds: float  # party processes from start to exit
    bytes_exchanged: int  # sent by all parties
    plain_seconds: float  # NumPy in the clear
    party_peak_bytes: int  # the largest party process's peak resident memory
    released: list[int]
    plain: list[int]


def owner_rows(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, GROUPS, size=rows), rng.integers(-50, UPPER + 50, size=rows)


def pre_aggregate(keys: np.ndarray, amounts: np.ndarray) -> list[int]:
    """The owner's vector, measure-major: COUNT per group, then the clamped SUM per group."""
    counts = np.bincount(keys, minlength=GROUPS)
    sums = np.bincount(keys, weights=np.clip(amounts, 0, UPPER), minlength=GROUPS)
    return [int(v) for v in counts] + [int(v) for v in sums]


def _plain(owners: list[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    total = np.zeros(2 * GROUPS, dtype=np.int64)
    for keys, amounts in owners:
        total[:GROUPS] += np.bincount(keys, minlength=GROUPS)
        total[GROUPS:] += np.bincount(
            keys, weights=np.clip(amounts, 0, UPPER), minlength=GROUPS
        ).astype(np.int64)
    return total.tolist()


def measure_mpc_part(rows: int, *, job: int = 1) -> MpcPartFigures:
    """Owners' input side and the three compute parties for `rows` rows per owner; the MPC
    credentials come from settings.MPC_CREDENTIALS_DIR (made there if missing)."""
    ensure_credentials(SITES)
    owners = [owner_rows(rows, seed) for seed in range(OWNERS)]
    start = time.perf_counter()
    plain = _plain(owners)
    plain_seconds = time.perf_counter() - start

    start = time.perf_counter()
    sealed = []  # sealed[owner][party]
    for number, (keys, amounts) in enumerate(owners):
        shares = sharing.split(pre_aggregate(keys, amounts), len(SITES))
        sealed.append(
            [
                sharing.seal_for_party(
                    shares[i], party_public_key(site), f"{job}/{number}/{i}".encode()
                )
                for i, site in enumerate(SITES)
            ]
        )
    owner_seconds = time.perf_counter() - start

    scales = [
        laplace_scale(1, EPSILON / 2, discrete=True),
        laplace_scale(UPPER, EPSILON / 2, discrete=True),
    ]
    addresses = party_addresses(job, SITES)
    specs = [
        PartySpec(
            job=job,
            index=i,
            sites=SITES,
            addresses=addresses,
            inputs=[
                sharing.open_for_party(
                    sealed[owner][i], party_private_key(site), f"{job}/{owner}/{i}".encode()
                )
                for owner in range(OWNERS)
            ],
            layout={"groups": GROUPS, "measures": MEASURES},
            noise=[{"measure": m, "scale": s} for m, s in zip(MEASURES, scales, strict=True)],
        )
        for i, site in enumerate(SITES)
    ]
    start = time.perf_counter()
    running = [start_party(spec) for spec in specs]
    with ThreadPoolExecutor(len(running)) as pool:
        outputs: list[PartyOutput] = list(pool.map(lambda party: party.wait(TIMEOUT), running))
    parties_wall = time.perf_counter() - start
    released = sharing.recombine({i: o.output for i, o in enumerate(outputs)})
    return MpcPartFigures(
        owner_seconds=owner_seconds,
        mpc_seconds=max(o.seconds["mpc"] for o in outputs),
        noise_seconds=max(o.seconds["noise"] for o in outputs),
        parties_wall_seconds=parties_wall,
        bytes_exchanged=sum(o.bytes_sent for o in outputs),
        plain_seconds=plain_seconds,
        party_peak_bytes=max(o.peak_memory_bytes for o in outputs),
        released=released,
        plain=plain,
    )


def _label(rows: int) -> str:
    return f"3x10^{len(str(rows)) - 1} rows"


def report_mpc_part(rows: int, figures: MpcPartFigures) -> None:
    label = _label(rows)
    plain = figures.plain_seconds
    owners_and_parties = figures.owner_seconds + figures.parties_wall_seconds
    largest = max(abs(a - b) for a, b in zip(figures.released, figures.plain, strict=True))
    lines = [
        ("owner-side pre-aggregation+sharing", f"{figures.owner_seconds:.3f} s"),
        ("part (input shares to output shares)", f"{figures.mpc_seconds:.2f} s"),
        ("noise sampling", f"{figures.noise_seconds:.2f} s"),
        ("party processes wall", f"{figures.parties_wall_seconds:.2f} s"),
        ("bytes exchanged", f"{figures.bytes_exchanged / 2**20:.1f} MB"),
        ("plain numpy", f"{plain:.4f} s"),
        ("part ratio to plain numpy", f"{figures.mpc_seconds / plain:.0f} x"),
        ("owners+parties ratio to plain numpy", f"{owners_and_parties / plain:.0f} x"),
        ("largest party process peak memory", f"{figures.party_peak_bytes / 2**20:.0f} MB"),
        ("largest noise drawn", f"{largest} units"),
    ]
    for name, value in lines:
        print(f"mpc {name} {label}: {value}", flush=True)


def run() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-mpc-") as folder,
        override_settings(MPC_CREDENTIALS_DIR=Path(folder) / "mpc"),
    ):
        for job, rows in enumerate(SIZES, start=1):
            report_mpc_part(rows, measure_mpc_part(rows, job=job))
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"mpc benchmark process peak memory: {own_peak:.0f} MB")


if __name__ == "__main__":
    run()
