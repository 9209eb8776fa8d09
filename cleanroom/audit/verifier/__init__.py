"""The offline verifier of clean-room audit logs: what a regulator runs on a bundle, without the
platform, and what the platform checks its own log with. One module a job:

- ``canonical``: canonical JSON, the byte encoding of every log event;
- ``merkle``: RFC 9162 Merkle tree hashes, inclusion and consistency proofs;
- ``notes``: C2SP signed notes (Ed25519), tlog checkpoints and witnesses' cosignatures;
- ``rules``: the clean room's domain rules over a room log, approvals, result commitments;
- ``bundle``: audit bundles (cleanroom-bundle/v1) and the regulator's trust file;
- ``__main__``: the command line;
- ``build``: the one runnable file each bundle ships, ``verify.pyz`` (a zipapp of the above).

It needs only the Python standard library and the ``cryptography`` package, and its modules
import each other relatively, so the zipapp runs with no project code (tests hold it to both).
This file imports none of them: the enclave imports ``canonical`` alone, and the code it is
measured by follows imports (cleanroom/attestation/measured.py).

Verification functions raise :class:`VerificationError` with a reason rather than returning
``False``, so a failed check always says why.
"""


class VerificationError(ValueError):
    """A proof, signature or encoding did not check out; the message says why."""
