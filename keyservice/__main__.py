"""`python -m keyservice init STATE --label LABEL`: a SoftHSM2 token of the service's own in
STATE. `python -m keyservice serve STATE --label LABEL --port PORT`: answer the API, with the
trust the organisation pinned in STATE/config.json. Prints `ready <port>` once listening.
`python -m keyservice suspend|resume STATE --label LABEL --dataset ID` (or `--room ID`): the
organisation's own kill switch for one dataset, or for its participation in one room, on its
own host."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cleanroom import metrics
from keyservice import config
from keyservice.release import ReleaseLog
from keyservice.server import KeyServiceServer
from keyservice.service import RESULTS, OrganizationKeyService
from keyservice.token import Token, init_softhsm, keep_private


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="keyservice")
    parser.add_argument("command", choices=["init", "serve", "suspend", "resume"])
    parser.add_argument("state", type=Path)
    parser.add_argument("--label", required=True, help="the token's label")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--metrics-port", type=int, help="serve: Prometheus metrics on this port (deploy/README.md)"
    )
    parser.add_argument("--metrics-host", default="127.0.0.1")
    parser.add_argument("--dataset", type=int, help="suspend, resume: the dataset's id")
    parser.add_argument("--room", type=int, help="suspend, resume: the room's id (participation)")
    args = parser.parse_args(argv)
    if args.command == "init":
        init_softhsm(args.state, args.label)
        print(f"token {args.label} in {args.state}")
        return
    keep_private(args.state)
    pinned, book, callers = config.load(args.state)
    if args.command in ("suspend", "resume"):
        if (args.dataset is None) == (args.room is None):
            parser.error(f"{args.command} takes one of --dataset and --room")
        kind, item = ("room", args.room) if args.room is not None else ("dataset", args.dataset)
        getattr(pinned.suspended_rooms if kind == "room" else pinned.suspended, args.command)(item)
        print(f"{kind}:{item} {'suspended' if args.command == 'suspend' else 'resumed'}")
        return
    token = Token(args.state, args.label)
    service = OrganizationKeyService(pinned, token, ReleaseLog(args.state / "releases.jsonl"), book)
    # Made before the service answers, so that no request waits for a key generation: the
    # results key every result released to the organisation is sealed to, and a spare pair for
    # the next MPC job's delivery key.
    service.receiving_key(RESULTS)
    token.make_spare()
    server = KeyServiceServer((args.host, args.port), service, callers, args.state)
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, args.metrics_host)
    print(f"ready {server.server_address[1]}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
