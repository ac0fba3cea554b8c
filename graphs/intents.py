"""What a caller's words ask for: intent keywords, yes/no, names, "the second one".

Pure functions over ``spoken_time.normalise``d text. The graphs use ``classify`` for the
``intent`` field of the state (no model call); the offline model uses all of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# "Don't call me again" in English and in Hinglish (romanised Hindi, as ASR writes it).
OPT_OUT = (
    r"\bstop (calling|phoning|ringing|contacting)\b"
    r"|\b(don['’]?t|dont|do not|never) (ever )?(call|phone|ring|contact) (me|us|this number|here)"
    r"( (again|anymore|any more|ever|back again)\b|$)"
    r"|\bdo not call (list|register|registry)\b|\bdo not call$|\bdo not disturb\b|\bunsubscribe\b"
    r"|\bopt (me )?out\b|\bno more calls\b"
    r"|\b(remove|take|delete|strike|cross) (me|my number|this number|us) (off|from|out of) (of )?(your |the |this )?"
    r"(calling |call |contact |contacts |mailing |phone |marketing )?(list|database|records?|system)\b"
    r"|\b(put|add) (me|my number|this number) (on|to|in) (your |the )?(do not call|don['’]?t call|dnd|no call)\b"
    r"|\bi (don['’]?t|do not) want (any |these |your |such )?(more )?(calls|phone calls|to be called)\b"
    r"|\b(call|phone|fone|kaal)\s+(mat|na|nahi|nahin|mut)\s+(karo|karna|karen|karein|kijiye|kijie|kariye|kar)\b"
    r"|\bmat (call|phone) (karo|karna|karen|karein|kijiye|kariye)\b|\bdobara (call|phone)\b"
    r"|\b(call|phone) (band|bandh) (karo|kar do|kijiye)\b|\b(call|phone|calls) nahi(n)? chahiye\b"
)
NOT_INTERESTED = (
    r"\bnot interested\b|\bno interest\b|\bnot for me\b|\b(don['’]?t|do not) need (it|this|that|anything)\b"
    r"|\binterest(ed)? nahi(n)?\b|\bnahi(n)? chahiye\b|\bzaroorat nahi(n)?\b"
)

_PATTERNS: tuple[tuple[str, str], ...] = (
    ("opt_out", OPT_OUT),  # before everything: "bye, and don't call me again" opts out
    ("not_interested", NOT_INTERESTED),  # before "bye": "no thanks, not interested"
    (
        "bye",
        r"\b(good ?bye|bye|that's all|that is all|that's it|nothing else|no thanks|no thank you|i'm done|hang up)\b",
    ),
    (
        "human",
        r"\b(speak|talk) (to|with) (a |an |the |some )?(person|human|someone|somebody|agent|representative|operator|"
        r"receptionist|manager|front desk|staff|real)|\b(transfer|put) me\b|\bconnect me\b|\breal person\b|\bhuman\b"
        r"|\boperator\b|\brepresentative\b",
    ),
    ("message", r"\b(take|leave|pass( on)?) a message\b|\bmessage for\b|\bleave (a |them a )?note\b"),
    ("cancel", r"\bcancel\b"),
    (
        "reschedule",
        r"\b(reschedule|move|change|push|shift) (my |the |it|our )?(appointment|booking|visit|it)?|\bdifferent (time|day)\b"
        r"|\breschedul|(?<!n't )(?<!not )\bmake it (?:at |on |for |to |around )?(?:\d|today\b|tomorrow\b|next\b|this\b|\w+day\b)",
    ),
    (
        "list",
        r"\bwhen is my\b|\bwhat time is my\b|\bdo i have (an |any )?appointments?\b|\bmy appointments\b|\bcheck my (appointment|booking)\b",
    ),
    (
        "book",
        r"\bbook\b|\bappointment\b|\bschedule\b|\bcome in\b|\bsee (the |a )?(doctor|dentist|hygienist)\b|\bavailab|\bfree (slot|time)\b"
        r"|\bopening\b|\bcheck ?up\b|\bcleaning\b|\bfollow ?up\b",
    ),
    (
        "question",
        r"^(what|how|when|where|why|which|who|do you|does|can you|can i|is there|are you|is it|could you)\b|\?$",
    ),
)
_YES = re.compile(
    r"^(yes|yeah|yep|yup|sure|ok|okay|alright|please|please do|correct|right|that's right|that is right|sounds good|"
    r"go ahead|absolutely|definitely|of course|i am|it is|that works|perfect|great)\b"
)
_NO = re.compile(r"^(no|nope|nah|not really|not now|no thanks|no thank you|none|i'm not|i am not|not yet|no budget)\b")
_FILLER = re.compile(r"^(um+|uh+|er+|well|so|oh|hi|hello|yes|yeah|sure|ok|okay)\b[ ,]*")


def classify(norm: str, flow: str, targets: Mapping[str, str] | None = None) -> str | None:
    """The first intent the words show (order matters: "opt_out" before everything, "bye"
    before "book"), or yes/no."""
    for name, pattern in _PATTERNS:
        if re.search(pattern, norm):
            if name == "bye" and re.search(r"\b(book|appointment|cancel|message)\b", norm):
                continue
            return name
    for target, desc in (targets or {}).items():
        named = desc and re.search(rf"\b({re.escape(target.replace('_', ' '))}|{re.escape(desc.lower())})\b", norm)
        if named and re.search(r"\b(speak|talk|through|connect|transfer|get)\b", norm):
            return "human"
    if is_yes(norm):
        return "yes"
    if is_no(norm):
        return "no"
    return None


def is_yes(norm: str) -> bool:
    return bool(_YES.search(norm.strip()))


def is_no(norm: str) -> bool:
    return bool(_NO.search(norm.strip()))


_NAME_INTRO = re.compile(
    r"\b(?:my name is|my name's|name is|name's|this is|i'm|i am|it's|it is|call me)\s+"
    r"([A-Za-z][A-Za-z'\-]+(?:\s+[A-Za-z][A-Za-z'\-]+){0,2})",
    re.I,
)
_NOT_NAMES = {
    "calling", "looking", "interested", "trying", "wondering", "not", "the", "a", "an", "just", "here", "fine",
    "good", "ok", "okay", "sure", "yes", "no", "ready", "available", "free", "sorry", "happy", "busy", "going",
    "hoping", "planning", "about", "for", "from", "with", "at", "on", "in", "and", "to", "me", "i", "that",
}  # fmt: skip
_STOP_AFTER = {"and", "from", "calling", "at", "please", "i", "i'd", "i'm", "with", "to", "for", "but", "so"}


def _clean_name(words: list[str]) -> str | None:
    kept: list[str] = []
    for w in words:
        lw = w.lower().strip(".,!?")
        if lw in _STOP_AFTER:
            break
        kept.append(lw)
    if not kept or kept[0] in _NOT_NAMES or any(ch.isdigit() for w in kept for ch in w):
        return None
    return " ".join(w[:1].upper() + w[1:] for w in kept)


def extract_name(text: str, *, expecting: bool = False) -> str | None:
    """A name the caller gives: "my name is Ana Lopez", "this is Ana"; when ``expecting``
    (we just asked for it), a bare answer like "Ana Lopez" or "uh, it's Ana" too."""
    if (m := _NAME_INTRO.search(text)) and (name := _clean_name(m.group(1).split())):
        return name
    if not expecting:
        return None
    rest = text.strip().strip(".!?")
    while (m2 := _FILLER.match(rest.lower())) and m2.end() > 0:
        rest = rest[m2.end() :]
    words = rest.replace(",", " ").split()
    if 1 <= len(words) <= 3:
        return _clean_name(words)
    return None


_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "last": -1, "earliest": 0, "latest": -1}


def pick_ordinal(norm: str, count: int) -> int | None:
    """Index chosen by "the first one", "the second", "the last one" among ``count`` options."""
    for word, index in _ORDINALS.items():
        if re.search(rf"\b(the )?{word}( one| option| time)?\b", norm) and not re.search(rf"\b{word} of\b", norm):
            i = index if index >= 0 else count - 1
            return i if 0 <= i < count else None
    return None
