"""Comment rules that need no I/O: trimming, length and the keyword filter.

Text is kept as the user wrote it (minus surrounding whitespace) and sent as data;
escaping for display is the client's job. Matching normalizes with NFKC and case
folding so full-width or differently-cased spellings of a blocked word match too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from realtime.errors import ProtocolError


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


class CommentRules:
    """Checks a comment's text; raises ProtocolError with the contract's codes."""

    def __init__(self, *, max_len: int, blocked_words: Iterable[str]) -> None:
        self.max_len = max_len
        self._blocked = tuple(folded for folded in (_fold(w).strip() for w in blocked_words) if folded)

    def clean(self, text: str) -> str:
        """The comment to publish: trimmed, non-empty, short enough, not blocked."""
        text = text.strip()
        if not text:
            raise ProtocolError("bad_request", "text must not be blank")
        if len(text) > self.max_len:
            raise ProtocolError("too_large", f"comments are at most {self.max_len} characters")
        if any(ord(ch) < 32 and ch not in "\n\t" for ch in text):
            raise ProtocolError("bad_request", "text must not contain control characters")
        folded = _fold(text)
        if any(word in folded for word in self._blocked):
            raise ProtocolError("forbidden", "the comment contains a blocked word")
        return text
