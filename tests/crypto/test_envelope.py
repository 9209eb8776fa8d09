"""Chunked AES-256-GCM for dataset files: round trips, and every kind of tampering refused."""

from __future__ import annotations

import io
import os

import pytest

from cleanroom.crypto.envelope import (
    _HEADER,
    TAG_SIZE,
    DecryptionError,
    decrypt_stream,
    encrypt_stream,
    new_data_key,
)

CHUNK = 16


def seal(plain: bytes, key: bytes, chunk_size: int = CHUNK) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plain), out, key, chunk_size=chunk_size)
    return out.getvalue()


def opened(sealed: bytes, key: bytes) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(sealed), out, key)
    return out.getvalue()


def chunks_of(sealed: bytes) -> tuple[bytes, list[bytes]]:
    header, body = sealed[: _HEADER.size], sealed[_HEADER.size :]
    size = CHUNK + TAG_SIZE
    return header, [body[i : i + size] for i in range(0, len(body), size)]


@pytest.mark.parametrize("length", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5])
def test_any_length_round_trips(length):
    key, plain = new_data_key(), os.urandom(length)
    sealed = seal(plain, key)
    assert opened(sealed, key) == plain
    # A short plaintext may turn up in random ciphertext by chance; a longer one may not.
    assert length < 8 or plain not in sealed


def test_the_default_chunk_size_round_trips_a_file_of_several_chunks():
    key, plain = new_data_key(), os.urandom(2 * 1024 * 1024 + 3)
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plain), out, key)
    assert opened(out.getvalue(), key) == plain


def test_each_encryption_uses_a_fresh_nonce_prefix():
    key, plain = new_data_key(), b"same plaintext"
    assert seal(plain, key) != seal(plain, key)


def test_the_wrong_key_is_refused():
    sealed = seal(b"rows of patients", new_data_key())
    with pytest.raises(DecryptionError, match="chunk 0 failed authentication"):
        opened(sealed, new_data_key())


@pytest.mark.parametrize("position", [0, CHUNK + TAG_SIZE, 2 * (CHUNK + TAG_SIZE) + 3, -1])
def test_a_flipped_bit_anywhere_in_the_body_is_refused(position):
    key = new_data_key()
    sealed = bytearray(seal(os.urandom(3 * CHUNK), key))
    index = position if position < 0 else _HEADER.size + position
    sealed[index] ^= 0x80
    with pytest.raises(DecryptionError, match="failed authentication"):
        opened(bytes(sealed), key)


def test_a_changed_header_is_refused():
    key = new_data_key()
    sealed = bytearray(seal(os.urandom(2 * CHUNK), key))
    sealed[_HEADER.size - 1] ^= 0x01  # the nonce prefix, bound as associated data
    with pytest.raises(DecryptionError):
        opened(bytes(sealed), key)


def test_a_file_cut_at_a_chunk_boundary_is_refused():
    key = new_data_key()
    header, chunks = chunks_of(seal(os.urandom(3 * CHUNK), key))
    with pytest.raises(DecryptionError, match="chunk 1 failed authentication"):
        opened(header + b"".join(chunks[:2]), key)


@pytest.mark.parametrize("keep", [1, TAG_SIZE, CHUNK + TAG_SIZE + 1])
def test_a_file_cut_inside_a_chunk_is_refused(keep):
    key = new_data_key()
    sealed = seal(os.urandom(3 * CHUNK), key)
    with pytest.raises(DecryptionError):
        opened(sealed[: _HEADER.size + keep], key)


def test_a_header_alone_or_less_is_refused():
    key = new_data_key()
    sealed = seal(os.urandom(CHUNK), key)
    with pytest.raises(DecryptionError):
        opened(sealed[: _HEADER.size], key)
    with pytest.raises(DecryptionError, match="header too short"):
        opened(sealed[:5], key)


def test_reordered_chunks_are_refused():
    key = new_data_key()
    header, chunks = chunks_of(seal(os.urandom(3 * CHUNK), key))
    with pytest.raises(DecryptionError, match="chunk 0 failed authentication"):
        opened(header + chunks[1] + chunks[0] + chunks[2], key)


def test_a_chunk_spliced_in_from_another_file_under_the_same_key_is_refused():
    key = new_data_key()
    header, chunks = chunks_of(seal(os.urandom(3 * CHUNK), key))
    _, others = chunks_of(seal(os.urandom(3 * CHUNK), key))
    with pytest.raises(DecryptionError, match="chunk 1 failed authentication"):
        opened(header + chunks[0] + others[1] + chunks[2], key)


def test_data_appended_after_the_last_chunk_is_refused():
    key = new_data_key()
    sealed = seal(os.urandom(2 * CHUNK), key)
    with pytest.raises(DecryptionError):
        opened(sealed + os.urandom(CHUNK + TAG_SIZE), key)


def test_a_file_that_is_not_an_encrypted_dataset_is_refused():
    with pytest.raises(DecryptionError, match="bad magic"):
        opened(b"PAR1" + os.urandom(100), new_data_key())
