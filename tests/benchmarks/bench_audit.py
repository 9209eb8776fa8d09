"""Audit log benchmarks.

- append throughput on PostgreSQL: one writer (a transaction per event, and batches of 100),
  eight concurrent writers (one log, and a log each), each against a plain INSERT loop with the
  same commits;
- a room log of 10^5 events: first checkpoint signing (which builds the stored Merkle tree over
  all of it) and incremental signing, a root and an inclusion proof from the stored nodes,
  bundle export (in-process, against dumping the same bytes), the shipped verify.pyz (as a
  regulator runs it, against hashing the bundle in a bare interpreter), and the platform's own
  verification; peak memory of export and verify.pyz;
- a log of 10^6 events (PostgreSQL): appended in batches of 10^4 (`record_events`), its stored
  tree built by the checkpoint signer's extension, then a root and an inclusion proof read from
  the stored nodes (no event re-read).

Targets (issue 6): at least 1,000 appends/s single writer; export and verify of 10^5 events
under 10 s each. Sizes can be changed with BENCH_APPENDS, BENCH_LOG_EVENTS and
BENCH_LARGE_LOG_EVENTS (0 skips the large log).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import tracemalloc
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.db import connection, connections, transaction
from django.utils import timezone

from cleanroom.audit import checkpoints, tree
from cleanroom.audit.bundles import export_bundle
from cleanroom.audit.log import record_event, record_events, room_log_name
from cleanroom.audit.models import AuditAttachment, AuditEvent, AuditLog
from cleanroom.audit.verification import verify_log
from cleanroom.audit.verifier.canonical import canonical_json
from cleanroom.audit.verifier.merkle import leaf_hash, verify_inclusion
from tests.audit.domain import happy_run, sign_decisions
from tests.benchmarks.support import report, run_python, scratch_database, timed

APPENDS = int(os.environ.get("BENCH_APPENDS", "2000"))
LOG_EVENTS = int(os.environ.get("BENCH_LOG_EVENTS", "100000"))
LARGE_LOG_EVENTS = int(os.environ.get("BENCH_LARGE_LOG_EVENTS", "1000000"))
WRITERS = 8
MiB = 1024 * 1024


def run() -> None:
    with scratch_database("audit") as workdir:
        if connection.vendor == "postgresql":
            append_benchmarks()
        else:
            print(
                "append: skipped (append throughput is measured on PostgreSQL only; "
                "set DATABASE_URL=postgres://...)"
            )
        if LOG_EVENTS:
            log_benchmarks(workdir)
        if LARGE_LOG_EVENTS and connection.vendor == "postgresql":
            large_log_benchmarks(LARGE_LOG_EVENTS)


# -- appends -----------------------------------------------------------------------------------

DATA = {"job": "job:1", "dataset": "dataset:1", "epsilon": "0.5", "delta": "0"}
PAYLOAD = canonical_json(
    {
        "log": "room/1",
        "seq": 0,
        "time": "2026-01-01T00:00:00.000000Z",
        "type": "budget.reserved",
        "actor": "user:1",
        "subject": "room:1",
        "data": DATA,
        "attachments": [],
    }
)


def append(log: str, i: int) -> None:
    record_event(
        log=log,
        type="budget.reserved",
        actor="user:1",
        subject="room:1",
        data={**DATA, "job": f"job:{i}"},
    )


def plain_insert(cursor, i: int) -> None:
    cursor.execute(
        "INSERT INTO bench_plain (log_id, seq, body, created_at) VALUES (1, %s, %s, now())",
        [i, PAYLOAD],
    )


def appends(log: str, count: int, batch: int = 1, offset: int = 0) -> None:
    for start in range(offset, offset + count, batch):
        with transaction.atomic():
            for i in range(start, min(start + batch, offset + count)):
                append(log, i)


def inserts(count: int, batch: int = 1, offset: int = 0) -> None:
    for start in range(offset, offset + count, batch):
        with transaction.atomic(), connection.cursor() as cursor:
            for i in range(start, min(start + batch, offset + count)):
                plain_insert(cursor, i)


def paired(ours, plain, n: int, rounds: int = 10) -> tuple[float, float]:
    """Total times of `ours(k, m)` and `plain(k, m)` over n items, run in alternating rounds
    of n/rounds: on a shared machine both then see the same load."""
    chunk = max(1, n // rounds)
    ours_time = plain_time = 0.0
    for k in range(0, n, chunk):
        m = min(chunk, n - k)
        ours_time += timed(lambda: ours(k, m))  # noqa: B023 - called at once
        plain_time += timed(lambda: plain(k, m))  # noqa: B023 - called at once
    return ours_time, plain_time


def concurrently(work) -> float:
    """Run work(k) in WRITERS threads, each with its own connection; return the wall time."""
    barrier = threading.Barrier(WRITERS + 1)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            barrier.wait()
            work(k)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(WRITERS)]
    for thread in threads:
        thread.start()
    seconds = timed(lambda: (barrier.wait(), [t.join() for t in threads]))
    if errors:
        raise errors[0]
    return seconds


def append_benchmarks() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bench_plain (id bigserial PRIMARY KEY, log_id integer, seq bigint, "
            "body bytea, created_at timestamptz)"
        )
    appends("room/warmup", 50)
    inserts(50)
    n = APPENDS

    ours, plain = paired(
        lambda k, m: appends("room/single", m, offset=k),
        lambda k, m: inserts(m, offset=10**6 + k),
        n,
    )
    report("append_single_writer", n / ours, "events/s", 0)
    report("append_single_writer_plain_insert", n / plain, "rows/s", 0)
    report("append_single_writer_vs_plain_insert", ours / plain, "x time")

    ours, plain = paired(
        lambda k, m: appends("room/batched", m, batch=100, offset=k),
        lambda k, m: inserts(m, batch=100, offset=2 * 10**6 + k),
        n,
    )
    report("append_single_writer_batches_of_100", n / ours, "events/s", 0)
    report("append_single_writer_batches_of_100_vs_plain_insert", ours / plain, "x time")

    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    ours, plain = paired(
        lambda k, m: appends("room/async", m, offset=k),
        lambda k, m: inserts(m, offset=3 * 10**6 + k),
        n,
    )
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = on")
    report("append_single_writer_async_commit", n / ours, "events/s", 0)
    report("append_single_writer_async_commit_vs_plain_insert", ours / plain, "x time")

    share = max(1, n // WRITERS)
    one_log = concurrently(lambda k: appends("room/shared", share, offset=k * share))
    own_logs = concurrently(lambda k: appends(f"room/writer-{k}", share))
    plain = concurrently(lambda k: inserts(share, offset=(4 + k) * 10**6))
    total = share * WRITERS
    report("append_8_writers_one_log", total / one_log, "events/s", 0)
    report("append_8_writers_own_logs", total / own_logs, "events/s", 0)
    report("append_8_writers_plain_insert", total / plain, "rows/s", 0)
    report("append_8_writers_own_logs_vs_plain_insert", own_logs / plain, "x time")
    seqs = AuditEvent.objects.filter(log__name="room/shared").values_list("seq", flat=True)
    assert sorted(seqs) == list(range(total)), "gap in sequence numbers under concurrency"


# -- a room log of 10^5 events ------------------------------------------------------------------


def synthetic_room_log(n: int):
    """(type, data, attachment) of query runs in the README vocabulary, ids renumbered per run."""
    template = happy_run()
    contributions, run = template[:2], template[2:]
    for _, data in contributions:
        data["total_epsilon"] = "1000000"
        data["total_delta"] = "1"
    for kind, data in contributions:
        yield kind, data, None
    text = json.dumps(run)
    k = 0
    produced = 2
    while produced < n:
        k += 1
        digest = hashlib.sha256(f"query {k}".encode()).hexdigest()
        cycle = sign_decisions(
            json.loads(
                text.replace('"query:7"', f'"query:{k}"')
                .replace('"job:5"', f'"job:{k}"')
                .replace("d" * 64, digest)
            )
        )
        for kind, data in cycle:
            if produced == n:
                return
            sql = b"SELECT age_band, COUNT(*) FROM charite.patients -- query " + str(k).encode()
            yield kind, data, sql if kind == "query.submitted" else None
            produced += 1


def bulk_room_log(log_name: str, n: int) -> AuditLog:
    """Write a room log's events as record_event would, in bulk (setup, not what is measured);
    like appends, it leaves the Merkle tree to the first checkpoint signing."""
    head = AuditLog.objects.create(name=log_name)
    start = datetime.now(UTC) - timedelta(days=1)
    events, blobs = [], {}

    def flush() -> None:
        AuditEvent.objects.bulk_create(events, batch_size=2000)
        AuditAttachment.objects.bulk_create(
            [AuditAttachment(sha256=s, content=c, size=len(c)) for s, c in blobs.items()],
            batch_size=2000,
            ignore_conflicts=True,
        )
        events.clear()
        blobs.clear()

    for seq, (kind, data, attachment) in enumerate(synthetic_room_log(n)):
        moment = start + timedelta(milliseconds=seq)
        shas = []
        if attachment is not None:
            sha = hashlib.sha256(attachment).hexdigest()
            blobs[sha] = attachment
            shas.append(sha)
        canonical = canonical_json(
            {
                "log": log_name,
                "seq": seq,
                "type": kind,
                "actor": None,
                "subject": "room:1",
                "time": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "data": data,
                "attachments": shas,
            }
        )
        events.append(
            AuditEvent(
                log=head,
                seq=seq,
                type=kind,
                canonical=canonical,
                leaf_hash=leaf_hash(canonical),
                created_at=moment,
            )
        )
        if len(events) >= 5000:
            flush()
    flush()
    return head


class _Room:
    """Just what export_bundle reads of a room."""

    def __init__(self, pk: int, slug: str) -> None:
        self.pk, self.slug = pk, slug


def log_benchmarks(workdir: Path) -> None:
    n = LOG_EVENTS
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    room = _Room(900001, "bench")
    log_name = room_log_name(room.pk)
    setup = timed(lambda: bulk_room_log(log_name, n))
    report(f"log_{label}_bulk_setup", setup, "s")

    report(
        f"checkpoint_first_sign_{label}",
        timed(lambda: checkpoints.sign_checkpoint(log_name)),
        "s",
        2,
    )
    with transaction.atomic():
        record_event(log=log_name, type="room.note", actor=None, subject="room:900001")
    report(
        "checkpoint_incremental_sign",
        1000 * timed(lambda: checkpoints.sign_checkpoint(log_name)),
        "ms",
    )
    head = AuditLog.objects.get(name=log_name)
    report(f"root_from_stored_nodes_{label}", 1000 * timed(lambda: tree.root(head)), "ms", 2)
    report(
        f"inclusion_proof_from_stored_nodes_{label}",
        1000 * timed(lambda: tree.inclusion_proof(head, n // 3, head.size)),
        "ms",
        2,
    )

    bundle = workdir / "bundle.zip"
    seconds = timed(lambda: export_bundle(room=room, output=bundle))
    baseline = timed(lambda: plain_dump(head, workdir / "plain.bin"))
    report(f"export_{label}", seconds, "s", 2)
    report(f"export_{label}_vs_plain_dump", seconds / baseline, "x time")
    report(f"export_{label}_bundle_size", bundle.stat().st_size / MiB, "MiB")
    tracemalloc.start()
    export_bundle(room=room, output=workdir / "again.zip")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    report(f"export_{label}_peak_python_memory", peak / MiB, "MiB")

    verifier = workdir / "verifier"
    verifier.mkdir()
    with zipfile.ZipFile(bundle) as archive:
        (verifier / "verify.pyz").write_bytes(archive.read("verify.pyz"))
    trust = workdir / "trust.txt"
    trust.write_text("\n".join(checkpoints.log_vkeys()) + "\n")
    child = run_python(["verify.pyz", str(bundle), "--trust", str(trust)], cwd=verifier)
    if child.returncode != 0:
        raise RuntimeError(f"verify.pyz refused the benchmark bundle: {child.stderr}")
    (verifier / "hash_bundle.py").write_text(HASH_BUNDLE)
    plain = run_python(["hash_bundle.py", str(bundle)], cwd=verifier)
    report(f"verify_py_{label}", child.seconds, "s", 2)
    report(f"verify_py_{label}_vs_sha256_of_bundle", child.seconds / plain.seconds, "x time")
    report(f"verify_py_{label}_peak_rss", child.peak_rss_bytes / MiB, "MiB")
    report("sha256_of_bundle_peak_rss", plain.peak_rss_bytes / MiB, "MiB")

    report(f"service_verify_log_{label}", timed(lambda: verify_log(log_name)), "s", 2)
    print(f"# {timezone.now():%Y-%m-%d %H:%M} on {connection.vendor}, {os.cpu_count()} CPUs")


def large_log_benchmarks(n: int) -> None:
    label = f"{n // 10**6}M" if n % 10**6 == 0 else str(n)
    log_name, batch = "room/large", 10_000

    def load() -> None:
        for start in range(0, n, batch):
            with transaction.atomic():
                record_events(
                    log=log_name,
                    events=[
                        {
                            "type": "budget.reserved",
                            "actor": "user:1",
                            "subject": "room:1",
                            "data": {**DATA, "job": f"job:{i}"},
                        }
                        for i in range(start, min(n, start + batch))
                    ],
                )

    seconds = timed(load)
    report(f"append_{label}_in_batches_of_10k", seconds, "s")
    report(f"append_{label}_in_batches_of_10k_rate", n / seconds, "events/s", 0)
    report(f"tree_build_{label}", timed(lambda: tree.extend(log_name)), "s")
    head = AuditLog.objects.get(name=log_name)
    assert head.size == n
    root = tree.root(head)
    report(f"root_from_stored_nodes_{label}", 1000 * timed(lambda: tree.root(head)), "ms", 2)
    index = n // 3
    proof: list[bytes] = []
    report(
        f"inclusion_proof_from_stored_nodes_{label}",
        1000 * timed(lambda: proof.extend(tree.inclusion_proof(head, index, n))),
        "ms",
        2,
    )
    event = AuditEvent.objects.get(log=head, seq=index)
    verify_inclusion(leaf_hash(bytes(event.canonical)), index, n, proof, root)
    report(f"inclusion_proof_{label}_hashes", len(proof), "hashes", 0)


HASH_BUNDLE = (
    "import hashlib, sys, zipfile\n"
    "with zipfile.ZipFile(sys.argv[1]) as z:\n"
    "    for name in z.namelist():\n"
    "        hashlib.sha256(z.read(name)).hexdigest()\n"
)


def plain_dump(head: AuditLog, path: Path) -> None:
    """The baseline for export: read the same rows and write their bytes, nothing else."""
    rows = AuditEvent.objects.filter(log=head).order_by("seq").values_list("canonical", flat=True)
    with path.open("wb") as out:
        for canonical in rows.iterator(chunk_size=5000):
            out.write(bytes(canonical) + b"\n")
