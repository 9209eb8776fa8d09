"""Streaming AES-256-GCM for dataset files, in fixed-size chunks with bounded memory.

Layout: a header (magic, chunk size, random 7-byte nonce prefix), then chunks of at most
`chunk_size` plaintext bytes, each sealed with AES-GCM under the nonce
prefix || chunk counter (4 bytes) || last-chunk flag (1 byte), with the header as associated data.
The counter stops reordering, the flag stops truncation (a file must end with a chunk sealed as
last), and the header binding stops splicing chunks across files. Each dataset version has its own
data key, so the nonce space is never shared.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"CRENC1\n"
CHUNK_SIZE = 1024 * 1024
TAG_SIZE = 16
_HEADER = struct.Struct(">7sI7s")


class DecryptionError(Exception):
    """The ciphertext was altered, truncated, reordered, or the key is wrong."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def encrypt_stream(src: BinaryIO, dst: BinaryIO, key: bytes, chunk_size: int = CHUNK_SIZE) -> None:
    aead = AESGCM(key)
    header = _HEADER.pack(MAGIC, chunk_size, os.urandom(7))
    prefix = header[-7:]
    dst.write(header)
    counter = 0
    chunk = src.read(chunk_size)
    while True:
        following = src.read(chunk_size)
        last = not following
        dst.write(aead.encrypt(_nonce(prefix, counter, last), chunk, header))
        if last:
            return
        chunk, counter = following, counter + 1


def decrypt_chunks(src: BinaryIO, key: bytes) -> Iterator[bytes]:
    header = src.read(_HEADER.size)
    if len(header) != _HEADER.size:
        raise DecryptionError("not an encrypted dataset file (header too short)")
    magic, chunk_size, prefix = _HEADER.unpack(header)
    if magic != MAGIC:
        raise DecryptionError("not an encrypted dataset file (bad magic)")
    aead = AESGCM(key)
    sealed_size = chunk_size + TAG_SIZE
    counter = 0
    sealed = src.read(sealed_size)
    while True:
        following = src.read(sealed_size)
        last = not following
        try:
            yield aead.decrypt(_nonce(prefix, counter, last), sealed, header)
        except InvalidTag:
            raise DecryptionError(f"chunk {counter} failed authentication") from None
        if last:
            return
        sealed, counter = following, counter + 1


def decrypt_stream(src: BinaryIO, dst: BinaryIO, key: bytes) -> None:
    for chunk in decrypt_chunks(src, key):
        dst.write(chunk)
