"""Key services started on this machine, one per organisation, as the demo and the tests start
them: `python -m keyservice serve` in a state folder of its own. Started by root, each runs as
an OS user of its own (`ks-<label>`, a system user without home or login, made once with
useradd) that owns its state folder (0700): no other organisation's service, and none of the
platform's processes, can read its token, its PIN or its configuration. Where no such user can
run the service (no useradd, or a Python or a folder only root may enter), it runs as the
starter's user, and `Started.refusal` says why.

Standard library only: the key service is the organisation's program, not the platform's."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ACCOUNT_PREFIX = "ks-"
_MAX_NAME = 32  # useradd's limit


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Runner:
    """How a service account runs the key service: the interpreter and its environment."""

    python: tuple[str, ...]
    environment: dict[str, str]


@dataclass
class Started:
    process: subprocess.Popen[str]
    account: Account | None  # None: the starter's own user
    runner: Runner
    refusal: str = ""  # why it does not run as an account of its own


def account_name(label: str) -> str:
    name = f"{ACCOUNT_PREFIX}{label}"
    if len(name) <= _MAX_NAME:
        return name
    return f"{name[: _MAX_NAME - 9]}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def service_account(label: str) -> Account:
    """The OS user the service of `label` runs as, made the first time (OSError, or
    subprocess.CalledProcessError, where it cannot be)."""
    name = account_name(label)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(  # noqa: S603 - a fixed program, a name of our own making
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                f"key service of {label}",
                name,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid)


def _environment(code_root: Path, extra_path: str = "") -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(code_root), extra_path]))
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "LANG": "C.UTF-8"}


def runner_for(account: Account, code_root: Path, states: Path) -> Runner:
    """This Python, or (where it lives in a folder only root enters, as pyenv's does under
    /root) the system's Python of the same version with this environment's packages, whichever
    the account can start the key service with and reach `states` (the folder holding the
    state folders); OSError when neither."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = os.pathsep.join(
        dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    )
    candidates = [
        Runner((sys.executable,), _environment(code_root)),
        Runner((f"/usr/bin/{version}",), _environment(code_root, packages)),
    ]
    probe = "import os, sys, keyservice.__main__; os.stat(sys.argv[1])"
    failures = []
    for runner in candidates:
        try:
            done = subprocess.run(  # noqa: S603 - our interpreter, fixed code
                [*runner.python, "-c", probe, str(states)],
                env=runner.environment,
                user=account.uid,
                group=account.gid,
                extra_groups=[],
                cwd="/",
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            failures.append(f"{runner.python[0]}: {exc}")
            continue
        if done.returncode == 0:
            return runner
        failures.append(f"{runner.python[0]}: {done.stderr.strip().splitlines()[-1:]}")
    raise OSError(f"{account.name} cannot run the key service here ({'; '.join(failures)})")


def hand_over(state: Path, account: Account) -> None:
    """The state folder and everything in it become the account's, the folder 0700."""
    for path in [state, *state.rglob("*")]:
        os.chown(path, account.uid, account.gid, follow_symlinks=False)
    state.chmod(0o700)


def start(
    state: Path, label: str, code_root: Path, *, separate: bool = True, runner: Runner | None = None
) -> Started:
    """Start the key service of `label` in `state` (its config.json written), initialising its
    token the first time; it prints `ready <port>` once it answers. With `separate` and run as
    root, as the OS user of its own, started as `runner` says (found by `runner_for` if not
    given: the service accounts are alike)."""
    account, refusal = None, ""
    if separate and os.geteuid() == 0:
        try:
            account = service_account(label)
            runner = runner or runner_for(account, code_root, state.parent)
        except (OSError, subprocess.CalledProcessError) as exc:
            account, refusal = None, f"not as a user of its own: {exc}"
    if account is None or runner is None:
        account, runner = None, Runner((sys.executable,), _environment(code_root))
    else:
        hand_over(state, account)
    # As the account, with its own group and no other; or as the starter.
    user, group = (account.uid, account.gid) if account else (None, None)
    extra_groups: list[int] | None = [] if account else None
    if not (state / "token.pin").exists():
        subprocess.run(  # noqa: S603 - our own program, fixed arguments
            [*runner.python, "-m", "keyservice", "init", str(state), "--label", label],
            env=runner.environment,
            cwd="/",
            check=True,
            capture_output=True,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
    process = subprocess.Popen(  # noqa: S603 - our own program, fixed arguments
        [*runner.python, "-m", "keyservice", "serve", str(state), "--label", label],
        env=runner.environment,
        cwd="/",
        stdout=subprocess.PIPE,
        text=True,
        user=user,
        group=group,
        extra_groups=extra_groups,
    )
    return Started(process, account, runner, refusal)
