"""The `cleanroom` command line, on the same client.

Exit codes: 0 done; 1 refused by the API (its message on stderr), a plan that does not pass,
or a job that failed; 2 a usage error (bad arguments, no token); 3 the server cannot be reached;
4 nothing signed: the server's digest is not that of the form it shows.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import polars as pl

from cleanroom.client.api import Client
from cleanroom.client.errors import ApiError, CannotConnect, RefusedToSign
from cleanroom.client.results import Extract
from cleanroom.client.review import Review

OK, REFUSED, USAGE, CANNOT_CONNECT, NOT_SIGNED = 0, 1, 2, 3, 4
DEFAULT_URL = "http://127.0.0.1:8000"


class UsageError(Exception):
    pass


def credentials_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "cleanroom" / "credentials.json"


def stored_credentials() -> dict[str, str]:
    path = credentials_path()
    return json.loads(path.read_text()) if path.exists() else {}


def store_credentials(url: str, token: str, expires_at: str | None) -> Path:
    """The token in a file only its user reads (0600, in a 0700 folder)."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its mode through os.open
    with os.fdopen(descriptor, "w") as out:
        json.dump({"url": url, "token": token, "expires_at": expires_at}, out)
    return path


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="cleanroom",
        description="The clean room's API from the command line. The token comes from "
        "CLEANROOM_TOKEN or `cleanroom login`.",
        epilog="Exit codes: 0 done; 1 refused by the API, a plan that does not pass or a failed "
        "job; 2 usage; 3 cannot connect; 4 nothing signed: the server's digest is not that of "
        "the form it shows.",
    )
    top.add_argument("--url", help=f"the server (CLEANROOM_URL, the login's, or {DEFAULT_URL})")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", help="get a token and keep it for the next commands")
    login.add_argument("username")
    login.add_argument("--days", type=int, help="the token's lifetime (default: the server's)")

    commands.add_parser("rooms", help="rooms your organisations are in or invited to")
    commands.add_parser("datasets", help="datasets you may see")
    policies = commands.add_parser("policies", help="the policy of each dataset in a room")
    policies.add_argument("room")
    budget = commands.add_parser("budget", help="each dataset's ε in a room")
    budget.add_argument("room")

    for name, help_text in (
        ("plan", "the plan of a query: checks, ε per dataset, accuracy, residency"),
        ("submit", "propose a query and submit it for approval"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("room")
        command.add_argument("sql", help="the query's SQL, or - to read it from stdin, or @FILE")
        command.add_argument("--epsilon", required=True)
        command.add_argument("--delta", default="0")
        command.add_argument("--mechanism", default="auto", choices=["auto", "mpc", "tee"])
        command.add_argument(
            "--receiver", action="append", dest="receivers", help="repeat; default: yours"
        )
        command.add_argument("--extract", metavar="METHOD", help="a synthetic extract by METHOD")
        command.add_argument("--rows", type=int, help="a synthetic extract's rows")
        if name == "submit":
            command.add_argument("--title", required=True)
            command.add_argument("--purpose", required=True)
            command.add_argument("--expires-in-days", type=int, default=30)
        else:
            command.add_argument("--json", action="store_true", help="the report as JSON")

    review = commands.add_parser(
        "review",
        help="what an approval of a query binds, its digest recomputed here, and the page "
        "where a passkey decides it",
    )
    review.add_argument("room")
    review.add_argument("query", type=int)
    for name, help_text in (
        ("approve", "approve a query for your organisation, signed with its machine key"),
        ("reject", "reject a query for your organisation, signed with its machine key"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("room")
        command.add_argument("query", type=int)
        command.add_argument("--org", required=True, help="the organisation that decides (slug)")
        command.add_argument(
            "--key", required=True, type=Path, help="its registered machine key file"
        )
        command.add_argument("--comment", default="")
        command.add_argument(
            "--yes", action="store_true", help="sign without asking (the form is still shown)"
        )

    run = commands.add_parser("run", help="run an approved query and wait for its job")
    run.add_argument("room")
    run.add_argument("query", type=int)
    run.add_argument("--no-wait", action="store_true", help="print the job's number and return")
    wait = commands.add_parser("wait", help="wait for a job, with a progress bar")
    wait.add_argument("room")
    wait.add_argument("job", type=int)

    result = commands.add_parser("result", help="a job's released result")
    result.add_argument("room")
    result.add_argument("job", type=int)
    result.add_argument("--csv", metavar="FILE", help="write it as CSV (- for stdout)")

    bundle = commands.add_parser("bundle", help="download a room's audit bundle")
    bundle.add_argument("room")
    bundle.add_argument("--out", metavar="FILE")
    return top


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:
        return USAGE if exit_.code else OK
    try:
        return COMMANDS[args.command](args)
    except UsageError as problem:
        print(f"cleanroom: {problem}", file=sys.stderr)
        return USAGE
    except RefusedToSign as refusal:
        print(f"cleanroom: not signed ({refusal.code}): {refusal.message}", file=sys.stderr)
        return NOT_SIGNED
    except CannotConnect as failure:
        print(f"cleanroom: {failure.message}", file=sys.stderr)
        return CANNOT_CONNECT
    except ApiError as refusal:
        print(f"cleanroom: refused ({refusal.code}): {refusal.message}", file=sys.stderr)
        for field, problems in refusal.fields.items():
            print(f"  {field}: {problems}", file=sys.stderr)
        return REFUSED


def _url(args) -> str:
    return (
        args.url or os.environ.get("CLEANROOM_URL") or stored_credentials().get("url", DEFAULT_URL)
    )


def _client(args) -> Client:
    token = os.environ.get("CLEANROOM_TOKEN") or stored_credentials().get("token")
    if not token:
        raise UsageError("no token: set CLEANROOM_TOKEN or run `cleanroom login USERNAME`")
    try:
        return Client(_url(args), token)
    except ValueError as problem:
        raise UsageError(str(problem)) from None


def _sql(text: str) -> str:
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_text()
        except OSError as problem:
            raise UsageError(f"cannot read the SQL: {problem}") from None
    return text


def _query_options(args) -> dict[str, Any]:
    return {
        "delta": args.delta,
        "mechanism": args.mechanism,
        "receivers": args.receivers,
        "output_kind": "synthetic" if args.extract else "aggregate",
        "synthetic_method": args.extract,
        "synthetic_rows": args.rows,
    }


def login(args) -> int:
    password = os.environ.get("CLEANROOM_PASSWORD") or getpass.getpass(
        f"{args.username}'s password: "
    )
    url = _url(args)
    try:
        client = Client.login(url, args.username, password, expires_in_days=args.days)
    except ValueError as problem:
        raise UsageError(str(problem)) from None
    path = store_credentials(client.base_url, client.token, client.token_expires_at)
    print(
        f"Logged in to {client.base_url}; token kept in {path} (expires {client.token_expires_at})"
    )
    return OK


def rooms(args) -> int:
    for room in _client(args).rooms():
        members = ", ".join(f"{m['organization']} ({m['status']})" for m in room["memberships"])
        datasets = ", ".join(c["dataset"] for c in room["contributions"]) or "none yet"
        print(f"{room['slug']}: {room['name']}\n  members: {members}\n  datasets: {datasets}")
    return OK


def datasets(args) -> int:
    for dataset in _client(args).datasets():
        suspended = " (suspended)" if dataset["suspended_at"] else ""
        where = f"in {dataset['jurisdiction']}{suspended}"
        print(f"{dataset['qualified_name']}: {dataset['name']}, {where}")
    return OK


def policies(args) -> int:
    print(json.dumps(_client(args).policies(args.room), indent=2))
    return OK


def budget(args) -> int:
    for line in _client(args).budget(args.room):
        print(
            f"{line['dataset']}: ε {line['remaining_epsilon']} of {line['total_epsilon']} left "
            f"({line['spent_epsilon']} spent)"
        )
    return OK


def plan(args) -> int:
    report = _client(args).plan(args.room, _sql(args.sql), args.epsilon, **_query_options(args))
    print(json.dumps(report.report, indent=2) if args.json else report)
    return OK if report.ok else REFUSED


def submit(args) -> int:
    query = _client(args).submit(
        args.room,
        _sql(args.sql),
        args.epsilon,
        title=args.title,
        purpose=args.purpose,
        expires_in_days=args.expires_in_days,
        **_query_options(args),
    )
    print(f"Query {query.id} ({query.title!r}) is {query.status}.")
    if query.plan.approvers:
        print(f"Approvals needed from: {', '.join(query.plan.approvers)}")
    return OK


def review(args) -> int:
    client = _client(args)
    form = client.review(args.query, args.room)
    print(form)
    print(
        f"\nTo decide with a passkey, open {page_of(client.base_url, form)} and check that the "
        f"page shows digest {form.digest}.\nWith the organisation's machine key: cleanroom "
        f"approve|reject {args.room} {args.query} --org SLUG --key FILE"
    )
    return OK


def page_of(base_url: str, form: Review) -> str:
    """The query's page in the web UI, where an owner decides with a passkey."""
    return f"{base_url}/rooms/{form.room}/queries/{form.query_id}/"


def decide(args) -> int:
    client = _client(args)
    form = client.review(args.query, args.room)
    # The owner sees what the signature binds before anything is signed.
    print(form, end="\n\n")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"not signed: pass --yes to {args.command} without being asked")
        answer = input(f"Sign '{args.command}' for {args.org} over this form? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing signed.")
            return OK
    decide_with = client.approve if args.command == "approve" else client.reject
    try:
        approval = decide_with(form, args.org, args.key, args.comment)
    except ValueError as problem:  # a key file that is not a machine key
        raise UsageError(str(problem)) from None
    verb = "approved" if approval["decision"] == "approve" else "rejected"
    print(
        f"Query {args.query} {verb} for {approval['organization']} "
        f"(version digest {approval['digest']})."
    )
    return OK


def run(args) -> int:
    client = _client(args)
    job = client.run(args.query, args.room)
    print(f"Job {job.id} is {job.state}.")
    if not args.no_wait:
        job = client.wait(job)
        print(f"Job {job.id} {job.state}: `cleanroom result {args.room} {job.id}` shows it.")
    return OK


def wait(args) -> int:
    job = _client(args).wait(args.job, args.room)
    print(f"Job {job.id} {job.state}.")
    return OK


def result(args) -> int:
    released = _client(args).result(args.job, args.room)
    if isinstance(released, Extract):
        frame = released.data
        print(f"Synthetic extract: {released.label or 'differentially private'}", file=sys.stderr)
    else:
        frame = released
    if args.csv == "-":
        sys.stdout.write(frame.write_csv())
    elif args.csv:
        frame.write_csv(args.csv)
        print(f"Wrote {len(frame)} rows to {args.csv}")
    else:
        print(readable(frame))
    return OK


def bundle(args) -> int:
    path = _client(args).bundle(args.room, args.out)
    print(f"Wrote {path}")
    return OK


def readable(frame: pl.DataFrame) -> str:
    """A result for a terminal: each value with its 95 % interval, each mechanism once."""
    if "suppressed" not in frame.columns:  # an extract's rows
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=160):
            return str(frame)
    dimensions = frame.columns[: frame.columns.index("suppressed")]
    aliases = [c.removesuffix("_mechanism") for c in frame.columns if c.endswith("_mechanism")]
    header = [*dimensions, *(f"{alias} [95 % interval]" for alias in aliases)]
    lines = [header]
    for row in frame.iter_rows(named=True):
        cells = [str(row[d]) for d in dimensions]
        for alias in aliases:
            cells.append(
                "suppressed"
                if row["suppressed"]
                else f"{_number(row[alias])} [{_number(row[alias + '_ci95_low'])}, "
                f"{_number(row[alias + '_ci95_high'])}]"
            )
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]  # fmt: skip
    mechanisms = {
        alias: frame[alias + "_mechanism"].drop_nulls().unique().to_list() for alias in aliases
    }
    text += [f"{alias}: {', '.join(names)}" for alias, names in mechanisms.items() if names]
    return "\n".join(text)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


COMMANDS = {
    "login": login,
    "rooms": rooms,
    "datasets": datasets,
    "policies": policies,
    "budget": budget,
    "plan": plan,
    "submit": submit,
    "review": review,
    "approve": decide,
    "reject": decide,
    "run": run,
    "wait": wait,
    "result": result,
    "bundle": bundle,
}
