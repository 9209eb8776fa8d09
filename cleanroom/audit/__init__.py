"""Tamper-evident audit log: canonical events, Merkle proofs, signed checkpoints."""
