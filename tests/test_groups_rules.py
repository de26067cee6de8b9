"""Group permission and message rules, without a database."""

from __future__ import annotations

import pytest

from realtime.errors import ProtocolError
from rooms.groups import rules
from rooms.groups.rules import Member, Sent

OWNER = Member("o", "owner")
ADMIN = Member("a", "admin")
MEMBER = Member("m", "member")
NOW = 1_000_000.0


def code_of(call: object) -> str:
    with pytest.raises(ProtocolError) as info:
        call()  # type: ignore[operator]
    return info.value.code


def test_send_needs_membership_and_no_mute() -> None:
    rules.check_send(MEMBER, muted_all=False, now=NOW)
    assert code_of(lambda: rules.check_send(None, muted_all=False, now=NOW)) == "not_member"
    muted = Member("m", "member", muted_until=NOW + 5)
    assert code_of(lambda: rules.check_send(muted, muted_all=False, now=NOW)) == "muted"
    expired_mute = Member("m", "member", muted_until=NOW - 1)
    rules.check_send(expired_mute, muted_all=False, now=NOW)


def test_mute_all_silences_members_but_not_managers() -> None:
    assert code_of(lambda: rules.check_send(MEMBER, muted_all=True, now=NOW)) == "muted"
    rules.check_send(ADMIN, muted_all=True, now=NOW)
    rules.check_send(OWNER, muted_all=True, now=NOW)


@pytest.mark.parametrize(
    ("actor", "target", "self_leave", "expected"),
    [
        (OWNER, ADMIN, False, None),
        (OWNER, MEMBER, False, None),
        (ADMIN, MEMBER, False, None),
        (ADMIN, Member("a2", "admin"), False, "forbidden"),
        (ADMIN, OWNER, False, "forbidden"),
        (MEMBER, Member("m2", "member"), False, "forbidden"),
        (MEMBER, MEMBER, True, None),
        (ADMIN, ADMIN, True, None),
        (OWNER, OWNER, True, "forbidden"),
        (None, None, True, "not_member"),
        (OWNER, None, False, "not_found"),
    ],
)
def test_kick_follows_rank(
    actor: Member | None, target: Member | None, self_leave: bool, expected: str | None
) -> None:
    def kick() -> None:
        rules.check_kick(actor, target, self_leave=self_leave)

    if expected is None:
        kick()
    else:
        assert code_of(kick) == expected


def test_recall_by_author_within_window_only() -> None:
    mine = Sent(5, "m", "text", NOW - 10, None)
    rules.check_recall(MEMBER, mine, MEMBER, now=NOW, window_s=120)
    old = Sent(5, "m", "text", NOW - 121, None)
    assert code_of(lambda: rules.check_recall(MEMBER, old, MEMBER, now=NOW, window_s=120)) == "expired"


def test_recall_of_others_needs_a_higher_rank() -> None:
    by_member = Sent(5, "m", "text", NOW, None)
    by_owner = Sent(6, "o", "text", NOW, None)
    other = Member("x", "member")
    assert code_of(lambda: rules.check_recall(other, by_member, MEMBER, now=NOW, window_s=60)) == "forbidden"
    rules.check_recall(ADMIN, by_member, MEMBER, now=NOW, window_s=60)
    assert code_of(lambda: rules.check_recall(ADMIN, by_owner, OWNER, now=NOW, window_s=60)) == "forbidden"
    # The author left the group: managers may still take the message back.
    rules.check_recall(ADMIN, by_member, None, now=NOW, window_s=60)


def test_recall_refuses_missing_messages_and_tombstones() -> None:
    tombstone = Sent(7, "m", rules.RECALL, NOW, None)
    assert code_of(lambda: rules.check_recall(MEMBER, None, None, now=NOW, window_s=60)) == "not_found"
    assert (
        code_of(lambda: rules.check_recall(MEMBER, tombstone, MEMBER, now=NOW, window_s=60)) == "bad_request"
    )
    assert code_of(lambda: rules.check_recall(None, tombstone, MEMBER, now=NOW, window_s=60)) == "not_member"


def test_roles_change_only_by_the_owner() -> None:
    rules.check_set_role(OWNER, MEMBER, "admin")
    assert code_of(lambda: rules.check_set_role(ADMIN, MEMBER, "admin")) == "forbidden"
    assert code_of(lambda: rules.check_set_role(OWNER, MEMBER, "owner")) == "bad_request"
    assert code_of(lambda: rules.check_set_role(OWNER, OWNER, "member")) == "forbidden"


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("text", None, None),
        ("room_card", "42", {"room_id": "42"}),
        ("room_card", 42, {"room_id": "42"}),
        ("room_card", {"room_id": 42}, {"room_id": "42"}),
        ("sale_card", {"sale_id": "s-1"}, {"sale_id": "s-1"}),
        ("sale_card", {"id": "s-1"}, {"sale_id": "s-1"}),
    ],
)
def test_card_refs_are_normalized(kind: str, raw: object, expected: dict[str, str] | None) -> None:
    assert rules.card_ref(kind, raw) == expected


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("text", "42", "bad_request"),
        ("room_card", None, "bad_request"),
        ("room_card", {"sale_id": "1"}, "bad_request"),
        ("sale_card", True, "bad_request"),
        ("sale_card", "x" * 65, "too_large"),
    ],
)
def test_bad_card_refs_are_refused(kind: str, raw: object, expected: str) -> None:
    assert code_of(lambda: rules.card_ref(kind, raw)) == expected


def test_text_rules() -> None:
    rules.check_text("text", "hi", max_chars=5)
    rules.check_text("room_card", "", max_chars=5)
    assert code_of(lambda: rules.check_text("text", "  ", max_chars=5)) == "bad_request"
    assert code_of(lambda: rules.check_text("text", "toolong", max_chars=5)) == "too_large"


def test_nul_characters_are_refused_or_dropped() -> None:
    assert code_of(lambda: rules.check_text("text", "a\x00b", max_chars=5)) == "bad_request"
    assert code_of(lambda: rules.card_ref("room_card", "4\x002")) == "bad_request"
    assert rules.display_name("An\x00n") == "Ann"


def test_unread_never_negative() -> None:
    assert rules.unread(10, 4) == 6
    assert rules.unread(4, 10) == 0
