"""The key service's HTTP API: `POST /keys` (a new KEK in the token), `POST /wrap` (wrap a new
version's data key, registering its dataset), `POST /release` (the attested release to an
enclave), `POST /site-key` (the key for the owner's own worker site), `POST /suspend` and `POST
/resume` (the owner's kill switch for one dataset, or for its participation in one room),
`POST /receiving-key` (the public half of
the results key or of an MPC job's delivery key), `POST /open` (open what was sealed to one, for
a named reader) and `POST /destroy` (a job's delivery key, at the job's end). There is no plain
unwrap of a dataset key for anyone else. Every request is signed by a pinned caller
(`signing.py`) and each caller may ask only what the organisation allowed it; every operation
and every key decision, yes or no, is appended to the service's own log (`decisions.jsonl`)
with the caller that asked and the reason."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cleanroom.metrics import count_refusal
from keyservice.config import OPERATIONS, Caller, grant_for
from keyservice.release import Refused, Released, ReleaseRequest, SiteKeyRequest
from keyservice.service import OrganizationKeyService
from keyservice.signing import HEADER, Unauthenticated, check_request
from keyservice.token import TokenError

MAX_BODY = 1 << 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def release_request(body: dict[str, Any]) -> ReleaseRequest:
    return ReleaseRequest(
        job=int(body["job"]),
        query=int(body["query"]),
        dataset=int(body["dataset"]),
        canonical=body["canonical"],
        approval=body["approval"] if isinstance(body["approval"], dict) else {},
        document=base64.b64decode(body["document"]),
        site=str(body["site"]),
        kek_id=str(body["kek_id"]),
        wrapped_key=base64.b64decode(body["wrapped_key"]),
        key_context={str(k): str(v) for k, v in body["key_context"].items()},
    )


class KeyServiceServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address, service: OrganizationKeyService, callers: dict[str, Caller], state: Path
    ):
        super().__init__(address, _Handler)
        self.service = service
        self.callers = callers
        self.decisions = state / "decisions.jsonl"
        self.lock = threading.Lock()

    def record(self, **entry: Any) -> None:
        entry = {"at": datetime.now(UTC).isoformat(), **entry}
        with self.lock, self.decisions.open("a") as log:
            log.write(json.dumps(entry, sort_keys=True) + "\n")


class _Handler(BaseHTTPRequestHandler):
    server: KeyServiceServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._answer(413, {"error": "request too large"})
        raw = self.rfile.read(length)
        try:
            keys = {name: c.key for name, c in self.server.callers.items()}
            caller = check_request(self.headers.get(HEADER), keys, "POST", self.path, raw)
        except Unauthenticated as exc:
            count_refusal("keyservice_unauthenticated")
            return self._answer(401, {"error": str(exc)})
        operation = self.path.removeprefix("/")
        if operation not in OPERATIONS:
            return self._answer(404, {"error": f"no such operation: {self.path}"})
        try:
            body = json.loads(raw or b"{}")
            grant = grant_for(operation, str(body.get("purpose", "")))
        except (ValueError, AttributeError) as exc:
            return self._answer(400, {"error": f"malformed request: {exc}"})
        if grant not in self.server.callers[caller].may:
            # A pinned caller asking beyond its grant: a process misused, or its key stolen.
            refusal = f"{caller} may not ask for {grant}"
            self.server.record(caller=caller, operation=operation, refused=refusal)
            count_refusal(f"keyservice_{operation.replace('-', '_')}")
            return self._answer(403, {"refused": refusal})
        try:
            answer = self._route(caller, body)
        except Refused as exc:
            count_refusal(f"keyservice_{operation.replace('-', '_')}")
            return self._answer(403, {"refused": str(exc)})
        except TokenError as exc:
            return self._answer(422, {"error": str(exc)})
        except (KeyError, ValueError, TypeError) as exc:
            return self._answer(400, {"error": f"malformed request: {exc}"})
        return self._answer(200, answer)

    def _decided(self, caller: str, request: ReleaseRequest | SiteKeyRequest, decide):
        """Ask the service's decision and log it, yes or no, with its reason."""
        entry = {"caller": caller, "job": request.job, "dataset": request.dataset}
        if isinstance(request, SiteKeyRequest):
            entry["site"] = request.site
        try:
            decided = decide(request)
        except Refused as exc:
            self.server.record(**entry, released=False, reason=str(exc))
            raise
        if isinstance(decided, Released):
            entry["evidence_sha256"] = decided.evidence_sha256
            reason = decided.reason
        else:
            reason = decided[1]
        self.server.record(**entry, released=True, reason=reason)
        return decided

    def _open(self, caller: str, body: dict[str, Any]) -> dict[str, Any]:
        """Open a sealed key for the reader the caller names; logged, yes or no."""
        context = base64.b64decode(body["context"])
        entry = {
            "caller": caller,
            "operation": "open",
            "purpose": str(body["purpose"]),
            "context": context.decode(errors="replace"),
            "reader": str(body["reader"]),
        }
        try:
            secret = self.server.service.open_received(
                entry["purpose"],
                base64.b64decode(body["sealed"]),
                context=context,
                reader=entry["reader"],
            )
        except Refused as exc:
            self.server.record(**entry, opened=False, reason=str(exc))
            raise
        self.server.record(**entry, opened=True)
        return {"secret": _b64(secret)}

    def _route(self, caller: str, body: dict[str, Any]) -> dict[str, Any]:
        service = self.server.service
        if self.path == "/keys":
            kek_id = service.create_key()
            self.server.record(caller=caller, operation="keys", kek_id=kek_id)
            return {"kek_id": kek_id}
        if self.path == "/wrap":
            context = {str(k): str(v) for k, v in body["context"].items()}
            wrapped = service.wrap_dataset_key(
                str(body["kek_id"]),
                base64.b64decode(body["data_key"]),
                context=context,
                name=str(body["name"]),
                jurisdiction=str(body["jurisdiction"]),
            )
            self.server.record(
                caller=caller, operation="wrap", kek_id=str(body["kek_id"]), context=context
            )
            return {"wrapped": _b64(wrapped)}
        if self.path == "/site-key":
            site_request = SiteKeyRequest(
                job=int(body["job"]),
                query=int(body["query"]),
                dataset=int(body["dataset"]),
                canonical=body["canonical"],
                approval=body["approval"] if isinstance(body["approval"], dict) else {},
                site=str(body["site"]),
                kek_id=str(body["kek_id"]),
                wrapped_key=base64.b64decode(body["wrapped_key"]),
                key_context={str(k): str(v) for k, v in body["key_context"].items()},
            )
            data_key, reason = self._decided(caller, site_request, service.site_key)
            return {"data_key": _b64(data_key), "reason": reason}
        if self.path in ("/suspend", "/resume"):
            suspend = self.path == "/suspend"
            if "room" in body:  # the organisation's participation in one room
                room = int(body["room"])
                (service.suspend_room if suspend else service.resume_room)(room)
                self.server.record(caller=caller, room=room, operation=self.path[1:])
                return {"room": room, "suspended": suspend}
            dataset = int(body["dataset"])
            (service.suspend if suspend else service.resume)(dataset)
            self.server.record(caller=caller, dataset=dataset, operation=self.path[1:])
            return {"dataset": dataset, "suspended": suspend}
        if self.path == "/receiving-key":
            purpose = str(body["purpose"])
            public_key = service.receiving_key(purpose)
            self.server.record(caller=caller, operation="receiving-key", purpose=purpose)
            return {"public_key": _b64(public_key)}
        if self.path == "/open":
            return self._open(caller, body)
        if self.path == "/destroy":
            purpose = str(body["purpose"])
            service.destroy_receiving_key(purpose)
            self.server.record(caller=caller, operation="destroy", purpose=purpose)
            return {"destroyed": purpose}
        if self.path == "/release":
            request = release_request(body)
            released = self._decided(caller, request, service.release)
            return {
                "sealed_key": _b64(released.sealed_key),
                "attestation_kind": released.attestation_kind,
                "evidence_sha256": released.evidence_sha256,
                "reason": released.reason,
            }
        raise AssertionError(self.path)
