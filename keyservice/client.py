"""How the platform calls an organisation's key service over its API: create and wrap for new
dataset versions (the web tier), the attested release a TEE host relays, and the key for the
owner's own worker site (an MPC input step). Each caller may ask only what the organisation
allowed it."""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.release import Refused, Released, ReleaseRequest, SiteKeyRequest
from keyservice.signing import HEADER, sign_request


class KeyServiceUnavailable(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class RemoteKeyService:
    def __init__(self, url: str, caller: str, key: Ed25519PrivateKey, timeout: float = 30):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a key service is reached over HTTP(S), not {url!r}")
        self.url = url.rstrip("/")
        self.caller = caller
        self.key = key
        self.timeout = timeout

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url + path,
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                HEADER: sign_request(self.caller, self.key, "POST", path, data),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            if exc.code == 403:
                raise Refused(payload.get("refused", "refused")) from None
            raise KeyServiceUnavailable(f"{exc.code}: {payload.get('error', '')}") from None
        except urllib.error.URLError as exc:
            raise KeyServiceUnavailable(str(exc.reason)) from None
        except (http.client.HTTPException, ConnectionError) as exc:  # closed without an answer
            raise KeyServiceUnavailable(f"{type(exc).__name__}: {exc}") from None

    def create_key(self) -> str:
        return self._post("/keys", {})["kek_id"]

    def wrap_dataset_key(
        self,
        kek_id: str,
        data_key: bytes,
        *,
        context: dict[str, str],
        name: str,
        jurisdiction: str,
    ) -> bytes:
        body = {
            "kek_id": kek_id,
            "data_key": _b64(data_key),
            "context": context,
            "name": name,
            "jurisdiction": jurisdiction,
        }
        return base64.b64decode(self._post("/wrap", body)["wrapped"])

    def site_key(self, request: SiteKeyRequest) -> tuple[bytes, str]:
        answer = self._post(
            "/site-key",
            {
                "job": request.job,
                "query": request.query,
                "dataset": request.dataset,
                "canonical": request.canonical,
                "approval": request.approval,
                "site": request.site,
                "kek_id": request.kek_id,
                "wrapped_key": _b64(request.wrapped_key),
                "key_context": request.key_context,
            },
        )
        return base64.b64decode(answer["data_key"]), answer["reason"]

    def suspend(self, dataset: int) -> None:
        self._post("/suspend", {"dataset": dataset})

    def resume(self, dataset: int) -> None:
        self._post("/resume", {"dataset": dataset})

    def suspend_room(self, room: int) -> None:
        self._post("/suspend", {"room": room})

    def resume_room(self, room: int) -> None:
        self._post("/resume", {"room": room})

    def release(self, request: ReleaseRequest) -> Released:
        answer = self._post(
            "/release",
            {
                "job": request.job,
                "query": request.query,
                "dataset": request.dataset,
                "canonical": request.canonical,
                "approval": request.approval,
                "document": _b64(request.document),
                "site": request.site,
                "kek_id": request.kek_id,
                "wrapped_key": _b64(request.wrapped_key),
                "key_context": request.key_context,
            },
        )
        return Released(
            sealed_key=base64.b64decode(answer["sealed_key"]),
            attestation_kind=answer["attestation_kind"],
            evidence_sha256=answer["evidence_sha256"],
            reason=answer["reason"],
        )

    def receiving_key(self, purpose: str) -> bytes:
        return base64.b64decode(self._post("/receiving-key", {"purpose": purpose})["public_key"])

    def open_received(self, purpose: str, sealed: bytes, *, context: bytes, reader: str) -> bytes:
        body = {
            "purpose": purpose,
            "sealed": _b64(sealed),
            "context": _b64(context),
            "reader": reader,
        }
        return base64.b64decode(self._post("/open", body)["secret"])

    def destroy_receiving_key(self, purpose: str) -> None:
        self._post("/destroy", {"purpose": purpose})
