"""Parsing and validating client commands: pure, no I/O.

A command frame is ``{"id": <int>, "op": "<op>", ...args}``. Handlers receive their
arguments through the small typed getters below, which raise ``bad_request`` with
the argument's name instead of letting a KeyError or TypeError escape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError

#: Largest command id accepted; keeps ids within JSON-safe integers.
MAX_ID = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Command:
    id: int
    op: str
    args: Mapping[str, Any]


def parse_command(value: Any) -> Command:
    """Validate a decoded frame; a bad one raises CommandError (id 0 when unknown)."""
    if not isinstance(value, dict):
        raise CommandError(0, ProtocolError("bad_request", "a command must be an object"))
    cid = value.get("id")
    if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid <= MAX_ID:
        raise CommandError(0, ProtocolError("bad_request", "id must be a non-negative integer"))
    op = value.get("op")
    if not isinstance(op, str) or not op:
        raise CommandError(cid, ProtocolError("bad_request", "op must be a non-empty string"))
    return Command(cid, op, value)


class CommandError(Exception):
    """A ProtocolError raised while the command id was already known."""

    def __init__(self, command_id: int, error: ProtocolError) -> None:
        super().__init__(error.message)
        self.command_id = command_id
        self.error = error


class Args:
    """Typed access to a command's arguments (or an HTTP JSON body)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def raw(self, name: str) -> Any:
        return self._values.get(name)

    def text(self, name: str, *, max_len: int = 256, optional: bool = False) -> str:
        value = self._values.get(name)
        if value is None and optional:
            return ""
        if not isinstance(value, str) or (not value and not optional):
            raise ProtocolError("bad_request", f"{name} must be a non-empty string")
        if len(value) > max_len:
            raise ProtocolError("too_large", f"{name} is longer than {max_len} characters")
        return value

    def opt_text(self, name: str, *, max_len: int = 256) -> str | None:
        if self._values.get(name) is None:
            return None
        return self.text(name, max_len=max_len)

    def integer(self, name: str, *, min: int | None = None, max: int | None = None) -> int:
        value = self._values.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError("bad_request", f"{name} must be an integer")
        if (min is not None and value < min) or (max is not None and value > max):
            raise ProtocolError("bad_request", f"{name} must be in [{min}, {max}]")
        return value

    def opt_integer(
        self,
        name: str,
        default: int | None = None,
        *,
        min: int | None = None,
        max: int | None = None,
    ) -> int | None:
        if self._values.get(name) is None:
            return default
        return self.integer(name, min=min, max=max)

    def obj(self, name: str, *, optional: bool = False) -> Mapping[str, Any] | None:
        value = self._values.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            raise ProtocolError("bad_request", f"{name} must be an object")
        return value
