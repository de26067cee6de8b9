"""Identity: HS256 access tokens in, an :class:`Identity` (or a guest) out.

Tokens say who a caller is, never what they may do: rights come from data the
domains own (a room's host, a group's member list).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from .errors import ProtocolError

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller: a signed-in user, or a guest (``user_id`` None)."""

    user_id: str | None
    name: str

    @property
    def is_guest(self) -> bool:
        return self.user_id is None

    def require_user(self) -> str:
        """The user id, or ``unauthorized`` for a guest."""
        if self.user_id is None:
            raise ProtocolError("unauthorized", "sign in first: this needs an access token")
        return self.user_id


GUEST = Identity(user_id=None, name="guest")


class TokenAuthority:
    """Issues and verifies access tokens with one shared secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def issue(self, user_id: str, *, name: str | None = None, ttl_s: int = 24 * 3600) -> str:
        now = int(time.time())
        claims = {"sub": user_id, "name": name or user_id, "iat": now, "exp": now + ttl_s}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str | None) -> Identity:
        """The identity for ``token``; None or empty means a guest."""
        if not token:
            return GUEST
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise ProtocolError("unauthorized", "token expired") from None
        except jwt.InvalidTokenError as exc:
            raise ProtocolError("unauthorized", f"invalid token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 128:
            raise ProtocolError("unauthorized", "invalid token: bad sub claim")
        name = claims.get("name")
        if not isinstance(name, str) or not name:
            name = sub
        return Identity(user_id=sub, name=name[:64])
