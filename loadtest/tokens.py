"""Access tokens minted by the generator itself, as the contract defines them."""

from __future__ import annotations

import time

import jwt


def mint(secret: str, user_id: str, name: str, ttl_s: int) -> str:
    """An HS256 JWT with `sub`, `name` and `exp`, valid for `ttl_s` seconds."""
    claims = {"sub": user_id, "name": name, "exp": int(time.time()) + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")
