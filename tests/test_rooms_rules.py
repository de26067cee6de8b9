"""Comment rules, refusal codes and room settings: pure functions, no I/O."""

from __future__ import annotations

import pytest

from realtime.config import ConfigError
from realtime.errors import ProtocolError
from rooms.live import RoomSettings
from rooms.live.comments import refusal_error
from rooms.live.records import Verdict
from rooms.live.rules import CommentRules

#: "free" in full-width letters, as some keyboards type it.
FULL_WIDTH_FREE = "\uff46\uff52\uff45\uff45"
RULES = CommentRules(max_len=10, blocked_words=["Spam", " ", "假货", FULL_WIDTH_FREE])


def refused(text: str) -> str:
    with pytest.raises(ProtocolError) as caught:
        RULES.clean(text)
    return caught.value.code


def test_text_is_trimmed_and_kept_as_written() -> None:
    assert RULES.clean("  <b>hi</b> ") == "<b>hi</b>"
    assert RULES.clean("two\nlines") == "two\nlines"


def test_length_counts_characters_after_trimming() -> None:
    assert RULES.clean("🎉" * 10) == "🎉" * 10
    assert RULES.clean("   " + "x" * 10 + "   ") == "x" * 10
    assert refused("x" * 11) == "too_large"


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_blank_comments_are_bad_requests(text: str) -> None:
    assert refused(text) == "bad_request"


def test_control_characters_are_refused() -> None:
    assert refused("bell\x07") == "bad_request"


@pytest.mark.parametrize("text", ["SPAM!", "no spam", "这是假货", "free", "FREE", FULL_WIDTH_FREE])
def test_blocked_words_match_whatever_the_case_or_width(text: str) -> None:
    assert refused(text) == "forbidden"


def test_blank_blocked_words_block_nothing() -> None:
    assert RULES.clean("a b c") == "a b c"


@pytest.mark.parametrize(
    ("verdict", "code", "words"),
    [
        (Verdict("ended"), "ended", "ended"),
        (Verdict("banned"), "banned", "banned"),
        (Verdict("muted", 0), "muted", "muted you in this room"),
        (Verdict("muted", 1500), "muted", "1.5s more"),
        (Verdict("slow", 2000), "rate_limited", "slow mode"),
        (Verdict("rate", 250), "rate_limited", "0.2s"),
    ],
)
def test_refusals_map_to_contract_codes(verdict: Verdict, code: str, words: str) -> None:
    error = refusal_error(verdict)
    assert error.code == code
    assert words in error.message


def test_settings_defaults_follow_the_issue() -> None:
    settings = RoomSettings.from_env({})
    assert settings.comment_max_len == 300
    assert settings.comment_budget_per_s == 20.0
    assert settings.presence_ttl_s == 10.0
    assert settings.blocked_words == ()


def test_settings_are_read_from_the_environment() -> None:
    settings = RoomSettings.from_env(
        {
            "LIVEMART_COMMENT_RATE": "2.5",
            "LIVEMART_BLOCKED_WORDS": "a, b ,,c",
            "LIVEMART_PRESENCE_TTL_S": "30",
        }
    )
    assert (settings.comment_rate_per_s, settings.presence_ttl_s) == (2.5, 30.0)
    assert settings.blocked_words == ("a", "b", "c")


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"LIVEMART_COMMENT_RATE": "fast"}, "LIVEMART_COMMENT_RATE"),
        ({"LIVEMART_COMMENT_MAX_LEN": "0"}, "LIVEMART_COMMENT_MAX_LEN"),
        ({"LIVEMART_PRESENCE_TTL_S": "1.5"}, "LIVEMART_PRESENCE_TTL_S"),
    ],
)
def test_bad_settings_name_their_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        RoomSettings.from_env(environ)
