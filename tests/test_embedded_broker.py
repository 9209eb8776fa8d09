"""The embedded broker (kombu's filesystem transport, as cleanroom/broker.py writes it) loses no
message to a worker that polls while another process publishes: kombu's own transport let a
worker take a message's file before it was written, and lost 45 to 75 of these 1000
(the worker then stopped on it)."""

from __future__ import annotations

import multiprocessing
import queue
import time
from pathlib import Path

from kombu import Connection

import cleanroom.celery  # noqa: F401 - registers the project's transport for filesystem://
from cleanroom.broker import FilesystemTransport

MESSAGES = 1000


def _connection(folder: Path) -> Connection:
    return Connection(
        "filesystem://",
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "store_processed": False,
        },
    )


def _publish(folder: Path) -> None:
    with _connection(folder) as connection:
        for number in range(MESSAGES):
            connection.default_channel._put("control", {"number": number, "body": "x" * 65536})


def _consume(folder: Path, results: multiprocessing.Queue) -> None:
    received: list[int] = []
    unreadable = 0
    deadline = time.monotonic() + 60
    with _connection(folder) as connection:
        channel = connection.default_channel
        while len(received) + unreadable < MESSAGES and time.monotonic() < deadline:
            try:
                received.append(channel._get("control")["number"])
            except ValueError:  # an empty file: the message is gone
                unreadable += 1
            except queue.Empty:
                continue
    results.put((received, unreadable))


def test_a_worker_polling_while_another_process_publishes_gets_every_message_whole(tmp_path):
    with _connection(tmp_path) as connection:
        assert isinstance(connection.transport, FilesystemTransport)
    # Spawned, not forked: a fork after the synthesis tests started JAX's threads can deadlock.
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    consumer = spawn.Process(target=_consume, args=(tmp_path, results))
    publisher = spawn.Process(target=_publish, args=(tmp_path,))
    consumer.start()
    publisher.start()
    publisher.join(60)
    received, unreadable = results.get(timeout=90)
    consumer.join(10)
    assert unreadable == 0
    assert sorted(received) == list(range(MESSAGES))  # every message, once
