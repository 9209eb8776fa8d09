"""A TCP relay, run as a process of its own in this machine's namespace: the control plane's
services (PostgreSQL, RabbitMQ, the web tier) listen on 127.0.0.1 only, and the test bed's
hosts reach them at the control plane's address on the bed's network, where this relays each
connection to 127.0.0.1 on the same port. It prints "ready" once it listens.

    python -m tests.bed.relay ADDRESS PORT [PORT ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


def _relay_to(port: int):
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))

    return relay


async def main(address: str, ports: list[int]) -> None:
    servers = [await asyncio.start_server(_relay_to(port), address, port) for port in ports]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], [int(port) for port in sys.argv[2:]]))
