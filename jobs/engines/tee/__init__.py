"""The TEE engine: the enclave program, its attestation, and the release of keys to it."""
