"""Key-encryption keys and receiving keys live in a PKCS#11 token (SoftHSM2) and never leave
it: their value cannot be read, a wrapped key opens only under its own context, what is sealed
to a receiving key opens only by agreement inside the token, and a destroyed key opens nothing
again."""

from __future__ import annotations

import os

import pytest

from cleanroom.crypto.sealing import open_received, seal_for_receiver
from keyservice.token import Token, TokenError, init_softhsm

CONTEXT = {"dataset": "7", "version": "1", "content_sha256": "ab" * 32}


@pytest.fixture(scope="module")
def token(tmp_path_factory):
    # The PKCS#11 library reads its configuration once per process, as a key service (one
    # organisation's token per process) does: one token for this module's tests.
    state = tmp_path_factory.mktemp("keyservice")
    init_softhsm(state, "org-test")
    before = os.environ.get("SOFTHSM2_CONF")
    yield Token(state, "org-test")
    if before is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = before


def test_a_data_key_wrapped_in_the_token_unwraps_under_its_context_only(token):
    kek = token.create_key()
    data_key = os.urandom(32)
    wrapped = token.wrap(kek, data_key, context=CONTEXT)
    assert data_key not in wrapped
    assert token.unwrap(kek, wrapped, context=CONTEXT) == data_key
    with pytest.raises(TokenError, match="does not match"):
        token.unwrap(kek, wrapped, context={**CONTEXT, "dataset": "8"})


def test_nobody_with_the_tokens_pin_can_read_a_keks_value(token):
    assert token.key_value_readable(token.create_key()) is False


def test_a_destroyed_kek_opens_nothing_it_wrapped(token):
    kek = token.create_key()
    wrapped = token.wrap(kek, os.urandom(32), context=CONTEXT)
    token.destroy_key(kek)
    with pytest.raises(TokenError, match="unknown key"):
        token.unwrap(kek, wrapped, context=CONTEXT)
    token.destroy_key(kek)  # twice is harmless


def test_what_is_sealed_to_a_receiving_key_opens_only_by_agreement_inside_the_token(token):
    public = token.receiving_key("org7results")
    assert token.receiving_key("org7results") == public  # made once, then the same key
    data_key = os.urandom(32)
    sealed = seal_for_receiver(public, data_key, context=b"result of job 3")
    assert (
        open_received(
            lambda peer: token.agree("org7results", peer), sealed, context=b"result of job 3"
        )
        == data_key
    )
    assert token.key_value_readable("org7results") is False


def test_a_destroyed_receiving_key_opens_nothing_sealed_to_it(token):
    public = token.receiving_key("org7job9")
    sealed = seal_for_receiver(public, b"share", context=b"job 9")
    token.destroy_receiving_key("org7job9")
    with pytest.raises(KeyError, match="unknown receiving key"):
        open_received(lambda peer: token.agree("org7job9", peer), sealed, context=b"job 9")
    assert token.receiving_key("org7job9") != public  # asked again: a new key, not the old


def test_a_delivery_key_is_the_spare_made_ahead_and_another_spare_follows(token):
    token.make_spare()
    first = token.receiving_key("org7job11")
    token.make_spare()  # the next spare: made already in the background, or made now
    second = token.receiving_key("org7job12")
    assert first != second
    assert token.receiving_key("org7job11") == first
    assert token.key_value_readable("org7job11") is False
