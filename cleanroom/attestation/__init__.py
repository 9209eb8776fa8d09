"""Enclave attestation, in the kernel so that every party that decides on a document uses the
same code: the verifier (`verify.py`: AWS Nitro documents and this deployment's simulated
ones), what ties a document to a job (`binding.py`), and the enclave's measured code
(`measured.py`). Standard library and `cryptography`/`cbor2` only: no Django, no app."""
