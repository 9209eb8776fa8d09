"""Envelope encryption, key management and signing: the only place the project touches keys."""
