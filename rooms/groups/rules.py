"""Who may do what in a group, and what a valid message looks like: pure, no I/O.

The write path and the HTTP/WS handlers call these with rows they already read, so
every permission rule lives here once and is tested without a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from realtime.errors import ProtocolError

_RANK = {"owner": 3, "admin": 2, "member": 1}

#: Kinds a member may send with ``group.send``.
SEND_KINDS = ("text", "room_card", "sale_card")
#: Kinds only the server writes: announcements and recall tombstones.
ANNOUNCEMENT = "announcement"
RECALL = "recall"

#: Longest client_msg_id accepted (a UUID is 36 characters).
MAX_CLIENT_ID_CHARS = 64
#: The field of ``ref`` that names what a card points at.
CARD_REF_FIELD = {"room_card": "room_id", "sale_card": "sale_id"}


@dataclass(frozen=True, slots=True)
class Member:
    """A member row as the rules need it."""

    user_id: str
    role: str
    muted_until: float | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """A stored message as the recall rule needs it."""

    seq: int
    sender_id: str
    kind: str
    created_at: float
    recalled_seq: int | None


def outranks(actor: str, target: str) -> bool:
    return _RANK[actor] > _RANK[target]


def is_manager(role: str) -> bool:
    """Owners and admins run the group: invites, kicks, mutes, announcements."""
    return role in ("owner", "admin")


def require_member(member: Member | None) -> Member:
    if member is None:
        raise ProtocolError("not_member", "you are not a member of this group")
    return member


def require_manager(member: Member | None) -> Member:
    member = require_member(member)
    if not is_manager(member.role):
        raise ProtocolError("forbidden", "only the owner or an admin may do this")
    return member


def check_send(member: Member | None, *, muted_all: bool, now: float) -> None:
    """Raise unless ``member`` may post a message right now."""
    member = require_member(member)
    if member.muted_until is not None and member.muted_until > now:
        raise ProtocolError("muted", f"you are muted for {member.muted_until - now:.0f} more seconds")
    if muted_all and not is_manager(member.role):
        raise ProtocolError("muted", "only the owner and admins may post while the group is muted")


def check_recall(
    actor: Member | None,
    target: Sent | None,
    author: Member | None,
    *,
    now: float,
    window_s: float,
) -> None:
    """Raise unless ``actor`` may recall ``target`` (authored by ``author``, None if gone).

    The author may recall their own message; the owner or an admin may recall one by
    someone they outrank. Either way only within the recall window.
    """
    actor = require_member(actor)
    if target is None:
        raise ProtocolError("not_found", "no such message")
    if target.kind == RECALL:
        raise ProtocolError("bad_request", "a recall cannot be recalled")
    if target.sender_id != actor.user_id:
        author_role = author.role if author is not None else "member"
        if not (is_manager(actor.role) and outranks(actor.role, author_role)):
            raise ProtocolError("forbidden", "you may recall only your own messages")
    if now - target.created_at > window_s:
        raise ProtocolError("expired", f"messages can be recalled within {window_s:.0f} seconds")


def check_kick(actor: Member | None, target: Member | None, *, self_leave: bool) -> None:
    """Raise unless ``actor`` may remove ``target`` (or leave, when ``self_leave``)."""
    actor = require_member(actor)
    if self_leave:
        if actor.role == "owner":
            raise ProtocolError("forbidden", "the owner cannot leave; hand the group to someone first")
        return
    require_manager(actor)
    if target is None:
        raise ProtocolError("not_found", "no such member")
    if not outranks(actor.role, target.role):
        raise ProtocolError("forbidden", f"an {actor.role} cannot remove an {target.role}")


def check_moderate(actor: Member | None, target: Member | None) -> None:
    """Muting someone: a manager acting on someone they outrank."""
    actor = require_manager(actor)
    if target is None:
        raise ProtocolError("not_found", "no such member")
    if not outranks(actor.role, target.role):
        raise ProtocolError("forbidden", f"an {actor.role} cannot mute an {target.role}")


def check_set_role(actor: Member | None, target: Member | None, role: str) -> None:
    """Only the owner appoints or demotes admins; ownership is not transferable here."""
    actor = require_member(actor)
    if actor.role != "owner":
        raise ProtocolError("forbidden", "only the owner may change roles")
    if role not in ("admin", "member"):
        raise ProtocolError("bad_request", "role must be admin or member")
    if target is None:
        raise ProtocolError("not_found", "no such member")
    if target.role == "owner":
        raise ProtocolError("forbidden", "the owner's role cannot change")


def card_ref(kind: str, raw: Any) -> dict[str, str] | None:
    """The stored ``ref`` of a message: None for text, ``{room_id}``/``{sale_id}`` for cards.

    Clients may send the id itself or an object naming it; both are kept as a string.
    """
    field = CARD_REF_FIELD.get(kind)
    if field is None:
        if raw is not None:
            raise ProtocolError("bad_request", f"a {kind} message takes no ref")
        return None
    value = raw.get(field, raw.get("id")) if isinstance(raw, Mapping) else raw
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ProtocolError("bad_request", f"a {kind} needs ref {{{field}}}")
    text = str(value)
    if len(text) > 64:
        raise ProtocolError("too_large", "ref id is longer than 64 characters")
    check_storable("ref", text)
    return {field: text}


def check_text(kind: str, text: str, *, max_chars: int) -> None:
    """Text is required for plain messages and announcements, optional on cards."""
    if len(text) > max_chars:
        raise ProtocolError("too_large", f"text is longer than {max_chars} characters")
    if kind not in CARD_REF_FIELD and not text.strip():
        raise ProtocolError("bad_request", "text must not be empty")
    check_storable("text", text)


def check_storable(field: str, value: str) -> None:
    """Refuse NUL characters: PostgreSQL text cannot hold them, and one such message
    would fail the whole write batch it shares with other senders."""
    if "\x00" in value:
        raise ProtocolError("bad_request", f"{field} must not contain NUL characters")


def display_name(name: str) -> str:
    """A name from a token as stored and shown (NULs dropped, see check_storable)."""
    return name.replace("\x00", "")


def unread(last_seq: int, read_seq: int) -> int:
    return max(0, last_seq - read_seq)
