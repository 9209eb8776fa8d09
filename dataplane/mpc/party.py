"""One MPC compute party: `python -m dataplane.mpc.party -M m -I i -P host:port ... --ssl`.

Started per job by jobs/engines/mpc/parties.py in a folder of its own holding only its TLS key,
certificate and the deployment's CA (.config/, where MPyC looks), with a minimal environment.
It reads one JSON document on stdin (job, index, every party's host, port and site, its own
shares of each owner's vector, the layout, the noise scales, its time limit), adds the owners'
shares, adds discrete Laplace noise sampled inside MPC (dataplane/mpc/noise.py) and prints
one JSON line: its Shamir share of each noisy cell (sharing.py's field and convention), bytes
sent and received, timings and peak memory. It never opens a value, noisy or not: the delivery
step recombines the shares.

MPyC's TLS verifies the chain, but a listening party learns a connecting peer's index from what
the peer claims, and MPyC listens on every interface. This program's event loop closes both
gaps: it listens only on the address the job gives for this party, checks the certificate of
each party it connects to names the site at that index, and checks a connecting party's claimed
index against its certificate's site. A peer that fails a check, a lost connection and a
mismatch between the arguments and the job document each stop the party with exit status 2
and the reason on stderr.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from typing import TYPE_CHECKING, Any

from dataplane.mpc import noise, sharing

if TYPE_CHECKING:
    from mpyc.asyncoro import MessageExchanger

MPYC_PEER_NAME = "MPyC party "  # MPyC's TLS server_hostname for party j: "MPyC party j"


class PartyFailure(SystemExit):
    """Stops the party from inside an asyncio callback: asyncio re-raises SystemExit, so it
    ends `mpc.run` at once instead of being logged and left waiting."""

    def __init__(self, reason: str):
        super().__init__(2)
        self.reason = reason


class _PeerConnection(asyncio.Protocol):
    """MPyC's protocol for one peer, with the identity check, byte count and loss handling."""

    def __init__(self, inner: MessageExchanger, network: PartyNetwork, peer: int | None):
        self.inner = inner
        self.network = network
        self.peer = peer  # None for an incoming connection, until its claim is checked
        self.claim = bytearray()
        network.connections.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.network.bytes_received += len(data)
        if self.peer is None:
            # MPyC's client opens with its party id, 2 bytes little-endian.
            self.claim.extend(data)
            if len(self.claim) < 2:
                return
            self.peer = self.network.check_incoming(
                int.from_bytes(self.claim[:2], "little"),
                self.transport.get_extra_info("peercert"),
            )
            data = bytes(self.claim)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.network.finished:
            who = "a peer" if self.peer is None else f"party {self.peer}"
            raise PartyFailure(f"Lost the connection to {who} before the end: {exc or 'closed'}.")
        self.inner.connection_lost(exc)


class PartyNetwork(asyncio.SelectorEventLoop):
    """The event loop MPyC runs on, confining its connections to the job's parties."""

    def __init__(self, index: int, parties: list[dict[str, Any]]):
        super().__init__()
        self.index = index
        self.parties = parties
        self.connections: list[_PeerConnection] = []
        self.bytes_received = 0
        self.finished = False

    @property
    def bytes_sent(self) -> int:
        return sum(c.inner.nbytes_sent for c in self.connections)

    async def create_server(self, protocol_factory, host=None, port=None, **kwargs):
        own = self.parties[self.index]
        if port != own["port"]:
            raise PartyFailure(f"MPyC would listen on port {port}, the job says {own['port']}.")
        return await super().create_server(
            lambda: _PeerConnection(protocol_factory(), self, None),
            host=own["host"],
            port=port,
            **kwargs,
        )

    async def create_connection(
        self, protocol_factory, host=None, port=None, *, server_hostname=None, **kwargs
    ):
        peer = int(server_hostname.removeprefix(MPYC_PEER_NAME))
        expected = self.parties[peer]
        if (host, port) != (expected["host"], expected["port"]):
            raise PartyFailure(f"MPyC would connect to {host}:{port} as party {peer}.")
        try:
            return await super().create_connection(
                lambda: _PeerConnection(protocol_factory(), self, peer),
                host,
                port,
                server_hostname=expected["site"],
                **kwargs,
            )
        except ssl.SSLCertVerificationError as exc:
            raise PartyFailure(
                f"Party {peer} at {host}:{port} is not {expected['site']} of this deployment's"
                f" MPC CA: {exc.verify_message}."
            ) from None

    def check_incoming(self, claimed: int, certificate: dict | None) -> int:
        names = {v for kind, v in (certificate or {}).get("subjectAltName", ()) if kind == "DNS"}
        if not 0 <= claimed < self.index or self.parties[claimed]["site"] not in names:
            raise PartyFailure(
                f"A peer with a certificate for {sorted(names)} claimed to be party {claimed}."
            )
        return claimed


def _check(job: dict[str, Any]) -> None:
    parties, index = job["parties"], job["index"]
    if len(parties) < sharing.MIN_PARTIES:
        raise PartyFailure(f"MPC needs at least {sharing.MIN_PARTIES} parties, not {len(parties)}.")
    if len({p["site"] for p in parties}) != len(parties):
        raise PartyFailure("Each MPC party must be at a site of its own.")
    if not 0 <= index < len(parties):
        raise PartyFailure(f"No party {index} among {len(parties)}.")
    cells = job["layout"]["groups"] * len(job["layout"]["measures"])
    if [n["measure"] for n in job["noise"]] != job["layout"]["measures"]:
        raise PartyFailure("The noise specs must name the layout's measures, in order.")
    if not job["inputs"] or any(len(vector) != cells for vector in job["inputs"]):
        raise PartyFailure(f"Every input share vector must have {cells} cells.")


async def compute(mpc: Any, job: dict[str, Any], network: PartyNetwork) -> dict[str, Any]:
    await mpc.start()
    secure_field = mpc.SecFld(modulus=sharing.MODULUS)
    field = secure_field.field
    started = time.perf_counter()
    total = secure_field.array(field.array(job["inputs"][0]))
    for vector in job["inputs"][1:]:
        total = total + secure_field.array(field.array(vector))
    groups = job["layout"]["groups"]
    blocks = [(float(spec["scale"]), groups) for spec in job["noise"]]
    drawn = await noise.sample(mpc, secure_field, blocks)
    await mpc.gather(drawn)  # wait for the sampling alone, to time it
    noise_seconds = time.perf_counter() - started
    own_shares = await mpc.gather(total + drawn)
    mpc_seconds = time.perf_counter() - started
    sent, received = network.bytes_sent, network.bytes_received
    network.finished = True
    await mpc.shutdown()
    return {
        "output": [int(v) for v in own_shares.value],
        "noise_drawn": True,
        "bytes_sent": sent,
        "bytes_received": received,
        "seconds": {"mpc": mpc_seconds, "noise": noise_seconds},
        "peak_memory_bytes": _peak_memory(),
    }


def _peak_memory() -> int:
    """This process's peak resident memory (Linux's VmHWM: ru_maxrss would also count pages
    the parent had before exec)."""
    with open("/proc/self/status") as status:
        peak = next((line.split()[1] for line in status if line.startswith("VmHWM:")), "0")
    return int(peak) * 1024


def main() -> int:
    job = json.loads(sys.stdin.readline())
    # The host kills a party at its timeout; should the host die first, the party ends itself.
    signal.alarm(int(job["time_limit"]))
    try:
        _check(job)
        network = PartyNetwork(job["index"], job["parties"])
        asyncio.set_event_loop(network)
        # Only now: importing the runtime parses sys.argv and binds to the current event loop.
        from mpyc.runtime import mpc

        argv_parties = [(p.host, p.port) for p in mpc.parties]
        if argv_parties != [(p["host"], p["port"]) for p in job["parties"]] or (
            mpc.pid != job["index"] or not mpc.options.ssl
        ):
            raise PartyFailure("The MPyC arguments do not match the job's parties, or lack --ssl.")
        result = mpc.run(compute(mpc, job, network))
    except PartyFailure as failure:
        print(failure.reason, file=sys.stderr, flush=True)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
