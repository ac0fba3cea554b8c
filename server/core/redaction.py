"""PII redaction: one pure module, applied before anything is written anywhere.

``Redactor(settings).redact(text)`` replaces, per category (each switchable in
``[redaction]``), what a caller must not leave in SQL, logs or API answers, and keeps what a
human needs and no more:

==============  ==========================================================  ========================
category        what                                                        becomes
==============  ==========================================================  ========================
card            13-19 digits, Luhn-valid (any 13-19 digits after "card",    ``[card ending 4242]``
                "credit", "debit", "visa"... in the same text)
expiry          MM/YY or MMYY after "expires/expiry/valid thru", or right  ``[expiry]``
                after a card number
cvv             3-4 digits after "cvv/cvc/security code", or after a card  ``[CVV]``
aadhaar         12 digits, first 2-9, Verhoeff-valid (any 12 such digits    ``[Aadhaar ending 1234]``
                when "Aadhaar" is said)
pan             ``AAAAA9999A`` written, or spelled letter by letter         ``[PAN]``
bank_account    9-18 digits in a text with an IFSC or "account"             ``[bank account ending 6789]``
otp             4-8 digits after "OTP", "one time password", "code", "PIN"  ``[OTP]``
ssn             AAA-GG-SSSS (area not 000/666/9xx, group not 00, serial     ``[SSN]``
                not 0000); 9 such digits after "SSN/social security"
email           ``jane@example.com``, or spoken "jane at example dot com"   ``[email]``
==============  ==========================================================  ========================

An IFSC is the branch's code, not personal: it is kept.

**Spoken digits** are normalised before matching: digit words ("four two", "zero/oh/o",
Hindi/Hinglish "ek do teen char paanch chhe saat aath nau shunya"), "double four" -> 44,
"triple five" -> 555, digits and groups joined by spaces, dashes, dots or commas. A match
replaces the span of the original text that said it (the words around it stay).

**The unit is one final turn.** ASR interim results are never stored (the call log records
a caller turn once endpointing closed it, the turn being the concatenation of its finals),
so a number split across interim results is whole in the turn text. A number split across
two *turns* (the caller paused long enough for endpointing) is not joined: each half is
checked on its own (with "card"/"Aadhaar" said, a half of 13+ or 12 digits is still
caught); ``redact_digits`` is the rule for DTMF strings.

Guarantees: ``redact`` is idempotent (placeholders never match again, and it repeats until
nothing changes: each pass only turns free text into placeholders, so it ends); every
regex is precompiled with bounded quantifiers (no catastrophic backtracking); a 30-word
turn costs ~20 us without a number in it and ~100 us with a card number (timeit).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

CATEGORIES = ("card", "expiry", "cvv", "aadhaar", "pan", "bank_account", "otp", "ssn", "email")


class RedactionSettings(BaseModel):
    """``[redaction]``: one switch per category, all on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    card: bool = True
    expiry: bool = True
    cvv: bool = True
    aadhaar: bool = True
    pan: bool = True
    bank_account: bool = True
    otp: bool = True
    ssn: bool = True
    email: bool = True


@dataclass(frozen=True, slots=True)
class Finding:
    """One redacted span of the text it was found in: ``text[start:end]`` becomes ``replacement``."""

    category: str
    start: int
    end: int
    replacement: str = ""


# --- checksums --------------------------------------------------------------------------------
def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_VERHOEFF_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def verhoeff_valid(digits: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][ord(ch) - 48]]
    return c == 0


def verhoeff_check_digit(digits: str) -> str:
    """The digit that makes ``digits + it`` Verhoeff-valid."""
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[(i + 1) % 8][ord(ch) - 48]]
    return str(_VERHOEFF_INV[c])


def luhn_check_digit(digits: str) -> str:
    """The digit that makes ``digits + it`` Luhn-valid."""
    return next(d for d in "0123456789" if luhn_valid(digits + d))


def ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _aadhaar_shape(digits: str) -> bool:
    return len(digits) == 12 and digits[0] not in "01"


def _month_year(digits: str) -> bool:
    return len(digits) in (4, 6) and 1 <= int(digits[:2]) <= 12


# --- spoken digits ----------------------------------------------------------------------------
_DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    # Hindi / Hinglish
    "shunya": "0",
    "shoonya": "0",
    "sunya": "0",
    "ek": "1",
    "do": "2",
    "teen": "3",
    "char": "4",
    "chaar": "4",
    "paanch": "5",
    "panch": "5",
    "chhe": "6",
    "chhah": "6",
    "chah": "6",
    "saat": "7",
    "aath": "8",
    "nau": "9",
}
# Words that are digits only inside a number ("oh, my card...", "I do", "char" the verb):
# a run may also be matched without them at its ends.
_SOFT = frozenset({"oh", "o", "do", "char"})
_MULTIPLIERS = {"double": 2, "triple": 3}
_WORD_ALT = "|".join(sorted(_DIGIT_WORDS, key=len, reverse=True))

_ANY_DIGIT = re.compile(r"[0-9]")
_TOKEN = re.compile(r"[0-9]{1,32}|[A-Za-z]{1,16}")
_SEPARATOR = re.compile(r"[\s\-.,]{0,3}")  # between two pieces of one number (fullmatch)
_PLACEHOLDER = re.compile(
    r"\[(?:card ending \d{4}|Aadhaar ending \d{4}|bank account ending \d{4}|PAN|OTP|SSN|email|expiry|CVV|\d{1,2} digits)\]"
)
# --- patterns on the text ---------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,6}\.[A-Za-z]{2,24}"
)
_TLD = r"(?:com|in|org|net|co|io|edu|gov|info|biz|me|us|uk|ai|dev|app)"
# Nothing to find without one of these (the fast path of most turns).
_DIGITISH = re.compile(rf"[0-9@]|\b(?:{_WORD_ALT})\b|\sdot\s|\.{_TLD}\b", re.I)
_SPOKEN_EMAIL = re.compile(
    r"(?<![\w@])[a-z0-9]{1,32}(?:\s(?:dot|underscore|dash|hyphen)\s[a-z0-9]{1,32}){0,3}\s(?:at|@)\s"
    rf"[a-z0-9-]{{1,32}}(?:(?:\s?\.\s?|\sdot\s)[a-z0-9-]{{1,32}}){{0,3}}?(?:\s?\.\s?|\sdot\s){_TLD}\b",
    re.I,
)
_PAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{5}[0-9]{4}[A-Za-z](?![A-Za-z0-9])")
_PAN_SPACED = re.compile(r"(?<![A-Za-z0-9])[A-Z]{5}[ -][0-9]{4}[ -]?[A-Z](?![A-Za-z0-9])")
_SEP_S = r"[ .,-]{1,2}"
_SPOKEN_PAN = re.compile(
    rf"(?<![A-Za-z0-9])(?:[A-Za-z]{_SEP_S}){{5}}(?:(?:[0-9]|(?:{_WORD_ALT})\b)[ .,-]{{0,2}}){{4}}[A-Za-z](?![A-Za-z0-9])",
    re.I,
)
_IFSC = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{4}0[A-Za-z0-9]{6}(?![A-Za-z0-9])")
_EXPIRY_WRITTEN = re.compile(r"(?<![0-9/])(0?[1-9]|1[0-2])\s?/\s?([0-9]{2}|20[0-9]{2})(?![0-9/])")

_CARD_KW = re.compile(r"\b(?:card|credit|debit|visa|master\s?card|rupay|amex|american express|maestro)\b", re.I)
_AADHAAR_KW = re.compile(r"\b(?:aa?dhaa?r|aadhar|adhar|uid|uidai)\b", re.I)
_ACCOUNT_KW = re.compile(r"\b(?:account|a/c|acct|ifsc)\b", re.I)
_SSN_KW = re.compile(r"\b(?:ssn|social security)\b", re.I)


def _preceded_by(keywords: str) -> re.Pattern[str]:
    # The keyword, then at most four plain words (no digits, no placeholder), then the number.
    return re.compile(rf"\b(?:{keywords})\b[^\w\[\]]{{0,3}}(?:[A-Za-z']{{1,12}}[^\w\[\]]{{1,3}}){{0,4}}$", re.I)


_OTP_BEFORE = _preceded_by(
    r"otp|one[\s-]?time[\s-]?(?:password|pass ?code|pin|code)|verification (?:code|number)|passcode|pin(?!\s?code)"
    r"|(?<!zip )(?<!pin )(?<!area )(?<!postal )(?<!promo )(?<!coupon )(?<!country )(?<!discount )code"
)
_CVV_BEFORE = _preceded_by(r"cvv2?|cvc2?|security code|card verification (?:value|code)|three digit code")
_EXPIRY_BEFORE = _preceded_by(r"expir\w{0,6}|exp|valid (?:thru|through|till|until|upto|up to)")
_SSN_BEFORE = _preceded_by(r"ssn|social security(?: number)?")
_LOOKBACK = 80  # characters searched for a keyword before a number


@dataclass(slots=True)
class _Piece:
    digits: str
    start: int
    end: int
    soft: bool
    written: bool  # a group of written digits (its length says how it was grouped)


@dataclass(slots=True)
class _Context:
    text: str  # the text with placeholders, e-mails and PAN blanked (keyword search)
    card: bool
    aadhaar: bool
    account: bool
    ssn: bool


class Redactor:
    """Finds and replaces PII in text, per the categories switched on in ``settings``."""

    def __init__(self, settings: RedactionSettings | None = None) -> None:
        self.settings = settings or RedactionSettings()
        self._on = frozenset(c for c in CATEGORIES if getattr(self.settings, c))

    # --- public -----------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` with every finding replaced; idempotent."""
        if not self._on or not text or not _DIGITISH.search(text):
            return text
        for _ in range(8):  # each changing pass turns free text into placeholders: it ends
            found = self.findings(text)
            if not found:
                return text
            text = _apply(text, found)
        return text

    def redact_data(self, value: Any) -> Any:
        """A JSON-like value (dicts, lists, strings, numbers) with every string redacted;
        the same object when nothing changed."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            out = {k: self.redact_data(v) for k, v in value.items()}
            return out if any(out[k] is not v for k, v in value.items()) else value
        if isinstance(value, list | tuple):
            items = [self.redact_data(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return type(value)(items) if isinstance(value, tuple) else items
        return value

    def findings(self, text: str) -> list[Finding]:
        """What one pass replaces in ``text``, in order, not overlapping."""
        if not self._on or not text:
            return []
        on = self._on
        found: list[Finding] = []
        blocked: list[tuple[int, int]] = [m.span() for m in _PLACEHOLDER.finditer(text)] if "[" in text else []
        low = text.lower()
        has_digit = _ANY_DIGIT.search(text) is not None
        emails = [p for p, needed in ((_EMAIL, "@" in text), (_SPOKEN_EMAIL, " at " in low or "@" in text)) if needed]
        pans = [_PAN, _PAN_SPACED, _SPOKEN_PAN] if has_digit else [_SPOKEN_PAN]
        for pattern in emails:
            for m in pattern.finditer(text):
                if not _overlaps(m.span(), blocked):
                    blocked.append(m.span())
                    if "email" in on:
                        found.append(Finding("email", m.start(), m.end(), "[email]"))
        for pattern in pans:
            for m in pattern.finditer(text):
                if not _overlaps(m.span(), blocked):
                    blocked.append(m.span())
                    if "pan" in on:
                        found.append(Finding("pan", m.start(), m.end(), "[PAN]"))
        ifsc = [m.span() for m in _IFSC.finditer(text) if not _overlaps(m.span(), blocked)] if "0" in text else []
        blocked += ifsc  # kept as said, and never part of a number
        kw_text = _blank(text, blocked)
        ctx = _Context(
            kw_text,
            card=bool(_CARD_KW.search(kw_text)),
            aadhaar=bool(_AADHAAR_KW.search(kw_text)),
            account=bool(ifsc) or bool(_ACCOUNT_KW.search(kw_text)),
            ssn=bool(_SSN_KW.search(kw_text)),
        )
        card_found = False
        for run in _runs(text, blocked):
            for f in self._scan(run, 0, len(run), ctx, True):
                found.append(f)
                card_found = card_found or f.category == "card"
        if "expiry" in on and "/" in text:
            for m in _EXPIRY_WRITTEN.finditer(text):
                if _overlaps(m.span(), blocked) or any(f.start < m.end() and m.start() < f.end for f in found):
                    continue
                if card_found or _EXPIRY_BEFORE.search(kw_text, max(0, m.start() - _LOOKBACK), m.start()):
                    found.append(Finding("expiry", m.start(), m.end(), "[expiry]"))
        found.sort(key=lambda f: f.start)
        return found

    def redact_digits(self, digits: str, *, context: str | None = None) -> str:
        """DTMF keys as stored: a menu choice (1-3 keys, no sensitive ``context``) stays; a card
        or Aadhaar number shows its last four; anything else longer becomes ``[N digits]``.
        ``context`` is what the flow asked for ("card number", "OTP", "account", ...)."""
        keys = "".join(ch for ch in digits if ch in "0123456789*#")
        number = keys.strip("*#")
        if not keys:
            return digits
        sensitive = bool(context) and bool(
            _CARD_KW.search(context or "")
            or _AADHAAR_KW.search(context or "")
            or _ACCOUNT_KW.search(context or "")
            or _SSN_KW.search(context or "")
            or re.search(r"\b(?:otp|code|pin|password|cvv|number)\b", context or "", re.I)
        )
        if len(number) <= 3 and not sensitive:
            return digits
        if number.isdigit():
            if "card" in self._on and 13 <= len(number) <= 19 and luhn_valid(number):
                return f"[card ending {number[-4:]}]"
            if "aadhaar" in self._on and _aadhaar_shape(number) and verhoeff_valid(number):
                return f"[Aadhaar ending {number[-4:]}]"
        if not self._on:
            return digits
        return f"[{min(len(keys), 99)} digits]"

    # --- one run of digits --------------------------------------------------------------------------
    def _scan(self, run: Sequence[_Piece], lo: int, hi: int, ctx: _Context, at_start: bool) -> list[Finding]:
        """The findings in ``run[lo:hi]``: the whole, without soft words at its ends, then
        (too long for one number) every window of 9-19 digits; the rest is scanned again."""
        if lo >= hi:
            return []
        n = sum(len(p.digits) for p in run[lo:hi])
        windows = [(lo, hi)]
        if run[lo].soft and hi - lo > 1:
            windows.append((lo + 1, hi))
        if run[hi - 1].soft and hi - lo > 1:
            windows.append((lo, hi - 1))
            if run[lo].soft and hi - lo > 2:
                windows.append((lo + 1, hi - 1))
        for a, b in windows:
            hit = self._classify(run, a, b, ctx, at_start and all(p.soft for p in run[lo:a]))
            if hit is not None:
                return self._around(run, lo, a, b, hi, ctx, at_start, hit)
        if n > 19:  # too long for one number: the longest window at the leftmost place
            for a in range(lo, hi):
                keyword_ok = at_start and a == lo
                ends, width = [], 0
                for b in range(a + 1, hi + 1):
                    width += len(run[b - 1].digits)
                    if width > 19:
                        break
                    if width >= (3 if keyword_ok else 9):
                        ends.append(b)
                for b in reversed(ends):
                    hit = self._classify(run, a, b, ctx, keyword_ok)
                    if hit is not None:
                        return self._around(run, lo, a, b, hi, ctx, at_start, hit)
        return []

    def _around(
        self, run: Sequence[_Piece], lo: int, a: int, b: int, hi: int, ctx: _Context, at_start: bool, hit: Finding
    ) -> list[Finding]:
        before = self._scan(run, lo, a, ctx, at_start) if not all(p.soft for p in run[lo:a]) else []
        after: list[Finding] = []
        if hit.category == "card" and b < hi:
            after, b = self._card_tail(run, b, hi)
        return [*before, hit, *after, *self._scan(run, b, hi, ctx, False)]

    def _card_tail(self, run: Sequence[_Piece], b: int, hi: int) -> tuple[list[Finding], int]:
        """Expiry (MMYY) and/or CVV said right after a card number, in the same breath."""
        out: list[Finding] = []
        width, end = 0, b
        for k in range(b, min(hi, b + 8)):
            width += len(run[k].digits)
            digits = "".join(p.digits for p in run[b : k + 1])
            if width == 4 and _month_year(digits) and "expiry" in self._on and not out:
                out.append(Finding("expiry", run[b].start, run[k].end, "[expiry]"))
                end = k + 1
                break
            if width > 4:
                break
        rest = "".join(p.digits for p in run[end:hi])
        if 3 <= len(rest) <= 4 and "cvv" in self._on:
            out.append(Finding("cvv", run[end].start, run[hi - 1].end, "[CVV]"))
            end = hi
        return out, end

    def _classify(self, run: Sequence[_Piece], a: int, b: int, ctx: _Context, keyword_ok: bool) -> Finding | None:
        pieces = run[a:b]
        digits = "".join(p.digits for p in pieces)
        n, on = len(digits), self._on
        start, end = pieces[0].start, pieces[-1].end
        if 13 <= n <= 19 and "card" in on and (luhn_valid(digits) or ctx.card):
            return Finding("card", start, end, f"[card ending {digits[-4:]}]")
        if n == 12 and "aadhaar" in on and _aadhaar_shape(digits) and (verhoeff_valid(digits) or ctx.aadhaar):
            return Finding("aadhaar", start, end, f"[Aadhaar ending {digits[-4:]}]")
        before = ""
        if keyword_ok:
            before = ctx.text[max(0, start - _LOOKBACK) : start]
        if n == 9 and "ssn" in on and ssn_valid(digits):
            grouped = [len(p.digits) for p in pieces] == [3, 2, 4] and all(p.written for p in pieces)
            if grouped or (before and _SSN_BEFORE.search(before)) or ctx.ssn:
                return Finding("ssn", start, end, "[SSN]")
        if 9 <= n <= 18 and "bank_account" in on and ctx.account:
            return Finding("bank_account", start, end, f"[bank account ending {digits[-4:]}]")
        if not before:
            return None
        if 3 <= n <= 4 and "cvv" in on and _CVV_BEFORE.search(before):
            return Finding("cvv", start, end, "[CVV]")
        if _month_year(digits) and "expiry" in on and _EXPIRY_BEFORE.search(before):
            return Finding("expiry", start, end, "[expiry]")
        if 4 <= n <= 8 and "otp" in on and _OTP_BEFORE.search(before):
            return Finding("otp", start, end, "[OTP]")
        return None


def _overlaps(span: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    s, e = span
    return any(s < e2 and s2 < e for s2, e2 in spans)


def _blank(text: str, spans: Sequence[tuple[int, int]]) -> str:
    if not spans:
        return text
    chars = list(text)
    for s, e in spans:
        chars[s:e] = " " * (e - s)
    return "".join(chars)


def _runs(text: str, blocked: Sequence[tuple[int, int]]) -> list[list[_Piece]]:
    """The numbers of ``text``: maximal runs of digit groups and digit words joined by
    separators; blocked spans (placeholders, e-mails, PANs, IFSCs) break runs."""
    tokens = (
        [m for m in _TOKEN.finditer(text) if not _overlaps(m.span(), blocked)]
        if blocked
        else list(_TOKEN.finditer(text))
    )
    runs: list[list[_Piece]] = []
    run: list[_Piece] = []
    i, count = 0, len(tokens)
    while i < count:
        m = tokens[i]
        word = m.group()
        piece: _Piece | None = None
        if word.isdigit():
            piece = _Piece(word, m.start(), m.end(), False, True)
        else:
            low = word.lower()
            if low in _DIGIT_WORDS:
                piece = _Piece(_DIGIT_WORDS[low], m.start(), m.end(), low in _SOFT, False)
            elif low in _MULTIPLIERS and i + 1 < count:
                nxt = tokens[i + 1]
                said = nxt.group().lower()
                digit = _DIGIT_WORDS.get(said) or (said if said.isdigit() and len(said) == 1 else None)
                if digit is not None and _SEPARATOR.fullmatch(text, m.end(), nxt.start()):
                    piece = _Piece(digit * _MULTIPLIERS[low], m.start(), nxt.end(), False, False)
                    i += 1
        if piece is None:
            if run:
                runs.append(run)
                run = []
        else:
            if run and not (
                _SEPARATOR.fullmatch(text, run[-1].end, piece.start)
                and not _blocked_between(run[-1].end, piece.start, blocked)
            ):
                runs.append(run)
                run = []
            run.append(piece)
        i += 1
    if run:
        runs.append(run)
    # "+91 98765 43210" is a phone number, never a card or an Aadhaar number
    return [r for r in runs if not (r[0].start > 0 and text[r[0].start - 1] == "+")]


def _blocked_between(start: int, end: int, blocked: Sequence[tuple[int, int]]) -> bool:
    return any(start <= s < end for s, _ in blocked)


def _apply(text: str, found: Sequence[Finding]) -> str:
    out, pos = [], 0
    for f in found:
        if f.start < pos:
            continue
        out.append(text[pos : f.start])
        out.append(f.replacement)
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


@functools.lru_cache(maxsize=16)
def redactor_for(settings: RedactionSettings) -> Redactor:
    """The (cached) redactor of ``settings``."""
    return Redactor(settings)


def default_redactor() -> Redactor:
    """Every category on."""
    return redactor_for(RedactionSettings())
