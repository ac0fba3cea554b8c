"""LLM tokens -> speakable phrases (pure, no I/O).

A phrase ends at a sentence end (``.``, ``!``, ``?``, ``…``, a newline) or, once it holds at
least ``min_chars`` characters, at a clause boundary (``,``, ``;``, ``:``, a dash). The first
phrase of a reply ends at its first clause boundary from ``first_min_chars`` on ("Sure, | let
me check that."): the caller hears the reply start as soon as those words are spoken, not
once the model has written the whole clause and the voice rendered it (at a hosted model's
~90 tokens a second, ~50 ms sooner for a short opener, plus the voice's time for the rest). Phrases are
only ever cut at whitespace, so a token without whitespace (``3.50``, ``2:30``, ``e.g.``,
``bob@example.com``, ``555-123-4567``) is never split. Spans that contain whitespace but must
stay whole (``10 a.m.``, ``(555) 123-4567``, ``Dr. Smith``, ``March 3, 2025``) are protected
explicitly. A phrase that grows past ``max_chars`` without a boundary is cut at the last safe
space before it.

Every decision needs a little text after the candidate boundary (the next visible
character; ``_LOOKAHEAD`` characters for a forced cut), so the phrases depend only on the
text, never on how it was split into tokens.
"""

from __future__ import annotations

import re

_SENTENCE_END = frozenset(".!?…")
_CLAUSE_END = frozenset(",;:—–")
_CLOSERS = frozenset(")]\"'”’»")
_LOOKAHEAD = 32

# Words that end in a period without ending the sentence (lower case, with the period).
_ABBREVIATIONS = frozenset(
    """dr. mr. mrs. ms. mx. prof. st. mt. jr. sr. vs. approx. appt. apt. ave. blvd. dept. tel.
    ext. inc. ltd. co. corp. fig. est. gen. gov. lt. col. capt. sgt. rev. hon. rd. ft. oz. lb. lbs.
    min. max. sec. hr. hrs. mins. secs. jan. feb. mar. apr. jun. jul. aug. sep. sept. oct. nov.
    dec. mon. tue. tues. wed. thu. thur. thurs. fri. sat. sun. cf. al. viz. ca.""".split()  # noqa: SIM905
)
_INITIALISM = re.compile(r"^(?:[a-z]\.)+$", re.I)  # e.g. i.e. U.S. a.m. J.
_WEEKDAY = re.compile(r"^(?:mon|tues|wednes|thurs|fri|satur|sun)day,$", re.I)  # "Monday, March 3"
_NUMBER_PREFIX = frozenset(("no.", "nos.", "nr.", "vol.", "pp.", "p.", "ch.", "art.", "#."))

# Spans with whitespace inside that must stay in one phrase (used for forced cuts).
_PROTECTED = re.compile(
    r"""
    \+?\(?\d{1,4}\)?(?:[\ .-]\(?\d{2,4}\)?){2,5}            # phone numbers, digit groups
    | \d{1,2}(?::\d{2})?\s*[ap]\.?\s?m\b\.?                   # 10 a.m., 2:30 pm
    | \d{1,2}\s+o'clock
    | \b(?:dr|mr|mrs|ms|mx|prof|st|mt)\.\s+\S+               # Dr. Smith
    | \b[a-z]+\.?\s+\d{1,2}(?:st|nd|rd|th)?,\s+\d{4}          # March 3, 2025
    """,
    re.I | re.X,
)


class PhraseChunker:
    """Cut a stream of LLM tokens into phrases for TTS.

    ``push(token)`` returns the phrases completed by that token (often none); ``flush()``
    returns the rest at the end of the reply. Phrases are stripped; joining them with
    single spaces gives the input with its whitespace normalised.
    """

    def __init__(self, min_chars: int = 24, max_chars: int = 200, first_min_chars: int = 3) -> None:
        if min_chars < 1 or max_chars < min_chars or not 1 <= first_min_chars <= max_chars:
            raise ValueError("need 1 <= min_chars <= max_chars and 1 <= first_min_chars <= max_chars")
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._min = first_min_chars  # the clause threshold of the phrase being built
        self._buf = ""
        self._scan = 0  # every candidate before this index was decided "no boundary"
        self._undecided = False  # the scan stopped at a candidate that needs more text

    def push(self, token: str) -> list[str]:
        """Add a token; return the phrases it completed."""
        if not token:
            return []
        self._buf += token
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the reply: return whatever is left, as phrases."""
        out = self._drain(final=True)
        rest = self._buf.strip()
        self._buf, self._scan = "", 0
        if rest:
            out.append(rest)
        return out

    # --- internals -------------------------------------------------------------------------
    def _drain(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            cut = self._find_boundary(final=final)
            if cut is None and not self._undecided:
                cut = self._find_forced_cut(final=final)
            if cut is None:
                return out
            phrase = self._buf[:cut].strip()
            self._buf = self._buf[cut:].lstrip()
            self._scan = 0
            if phrase:
                out.append(phrase)
                self._min = self.min_chars

    def _find_boundary(self, *, final: bool) -> int | None:
        """Index of the whitespace after the first boundary, or None (none yet / undecided)."""
        buf = self._buf
        n = len(buf)
        i = self._scan
        self._undecided = False
        while i < n and i < self.max_chars:
            c = buf[i]
            if c == "\n":
                if buf[:i].strip():
                    return i
            elif c in _SENTENCE_END or c in _CLAUSE_END or (c == "-" and i > 0 and buf[i - 1] == " "):
                j = i + 1
                while j < n and (buf[j] in _SENTENCE_END or buf[j] in _CLOSERS):
                    j += 1
                if j == n and not final:
                    self._scan, self._undecided = i, True
                    return None
                if j == n or buf[j].isspace():
                    k = j
                    while k < n and buf[k].isspace():
                        k += 1
                    if k == n and not final:
                        self._scan, self._undecided = i, True
                        return None
                    nxt = buf[k] if k < n else ""
                    if self._is_boundary(buf, i, j, nxt):
                        return j
                i = j
                continue
            i += 1
        self._scan = i
        return None

    def _is_boundary(self, buf: str, i: int, j: int, nxt: str) -> bool:
        """Punctuation run buf[i:j] is followed by whitespace (or the end) and then ``nxt``."""
        run = buf[i:j]
        word = _word_before(buf, j)
        if buf[i] in _SENTENCE_END:
            if run.rstrip("".join(_CLOSERS)) == ".":
                lower = word.lower().lstrip("(\"'“‘[")
                if lower in _ABBREVIATIONS or _INITIALISM.match(lower):
                    return False
                if lower in _NUMBER_PREFIX and nxt.isdigit():
                    return False
            return True
        # Clause boundary: only once the phrase is long enough, never inside "3, 2025".
        if len(buf[:j].strip()) < self._min:
            return False
        if buf[i] == "," and (nxt.isdigit() and word[:1].isdigit() or _WEEKDAY.match(word) or _in_protected(buf, i)):
            return False
        return not (buf[i] == "-" and nxt.isdigit() and i >= 2 and buf[i - 2].isdigit())

    def _find_forced_cut(self, *, final: bool) -> int | None:
        """No boundary within max_chars: cut at the last safe space before it."""
        buf = self._buf
        if len(buf) <= self.max_chars or (not final and len(buf) < self.max_chars + _LOOKAHEAD):
            return None
        limit = len(buf) if final else len(buf) - _LOOKAHEAD
        spans = [m.span() for m in _PROTECTED.finditer(buf)]
        best = None
        for w in range(1, limit):
            if not buf[w].isspace() or buf[w - 1].isspace() or not _safe_cut(buf, w, spans):
                continue
            if w <= self.max_chars:
                best = w
            else:
                return best if best is not None else w
        return best if best is not None else None


def _word_before(buf: str, j: int) -> str:
    start = max(buf.rfind(" ", 0, j), buf.rfind("\n", 0, j), buf.rfind("\t", 0, j)) + 1
    return buf[start:j]


def _in_protected(buf: str, i: int) -> bool:
    return any(s < i < e for s, e in (m.span() for m in _PROTECTED.finditer(buf)))


def _safe_cut(buf: str, w: int, spans: list[tuple[int, int]]) -> bool:
    if any(s < w < e for s, e in spans):
        return False
    before = _word_before(buf, w)
    rest = buf[w:].lstrip()
    after = rest.split(None, 1)[0] if rest.strip() else ""
    lower = before.lower().lstrip("(\"'“‘[")
    if lower in _ABBREVIATIONS or lower in _NUMBER_PREFIX or _INITIALISM.match(lower):
        return False
    if any(ch.isdigit() for ch in before) and (any(ch.isdigit() for ch in after) or _INITIALISM.match(after)):
        return False
    return not re.match(r"^[ap]\.?m\b", after, re.I)
