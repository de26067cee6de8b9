"""Access tokens: issued, verified, and every way one can be wrong."""

from __future__ import annotations

import time

import jwt
import pytest

from realtime.auth import GUEST, TokenAuthority
from realtime.errors import ProtocolError

SECRET = "s" * 64


def test_issued_token_verifies_to_identity() -> None:
    tokens = TokenAuthority(SECRET)
    identity = tokens.verify(tokens.issue("u1", name="Ann"))
    assert (identity.user_id, identity.name, identity.is_guest) == ("u1", "Ann", False)


def test_no_token_is_a_guest_who_cannot_act() -> None:
    assert TokenAuthority(SECRET).verify(None) is GUEST
    with pytest.raises(ProtocolError) as info:
        GUEST.require_user()
    assert info.value.code == "unauthorized"


@pytest.mark.parametrize(
    "make",
    [
        lambda: jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "other" * 10, algorithm="HS256"),
        lambda: jwt.encode({"sub": "u", "exp": int(time.time()) - 5}, SECRET, algorithm="HS256"),
        lambda: jwt.encode({"sub": "u"}, SECRET, algorithm="HS256"),
        lambda: jwt.encode({"sub": "", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
        lambda: jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"),
        lambda: "not.a.token",
    ],
    ids=["forged", "expired", "no-exp", "empty-sub", "wrong-alg", "garbage"],
)
def test_bad_tokens_are_unauthorized(make: object) -> None:
    with pytest.raises(ProtocolError) as info:
        TokenAuthority(SECRET).verify(make())  # type: ignore[operator]
    assert info.value.code == "unauthorized"


def test_expired_token_says_so() -> None:
    tokens = TokenAuthority(SECRET)
    with pytest.raises(ProtocolError, match="expired"):
        tokens.verify(tokens.issue("u", ttl_s=-1))
