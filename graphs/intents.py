"""What a caller's words ask for: intent keywords, yes/no, names, "the second one".

Pure functions over ``spoken_time.normalise``d text, in English and in Hinglish (romanised
Hindi as ASR writes it: "appointment book karna hai", "cancel kar do", "haan ji",
"mera naam Priya hai"). ``normalise`` has already turned Hindi day and time words into
English ("kal" -> "tomorrow"); the rest of the Hindi stays as it is and is read here. Hindi
words that are also English ("do", "se", "na", "main") only count in a Hindi phrase.
The graphs use ``classify`` for the ``intent`` field of the state (no model call); the
offline model uses all of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dialgraph.server.core.language import HINDI_WORDS

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
    r"|\binterest(ed)? nahi(n)?\b|\bzaroorat nahi(n)?\b"
    # "nahi chahiye", but not "friday nahi chahiye, monday chahiye" (a choice, not a refusal)
    r"|(?<!day )(?<!tomorrow )(?<!today )(?<!\d )(?<!week )\bnahi(n)? chahiye\b(?!.*\bchahiye\b)"
)
# Hinglish intents (normalised text). "se baat karao": "put me through to ..."
_HI_HUMAN = (
    r"|\bse baat (karao|karwao|karwa do|karwa dijiye|kara do|kara dijiye|karaiye|karwaiye|karwayiye|karni hai|karna hai"
    r"|karni thi|karna tha|karna chahta|karna chahti|karna chahunga|karna chahungi|kar sakta|kar sakti|ho sakti)\b"
    r"|\b(insaan|insan|aadmi|asli (insaan|aadmi|person|banda))\b|\b(transfer|connect) (kar|karo|kardo|karwa|kijiye|karein)\b"
    r"|\bse (milao|mila do|milwa do|jod do|connect)\b"
)
_HI_MESSAGE = (
    r"|\bke liye (ek |koi )?(message|sandesh)\b|\b(ek|koi) message (hai|tha|dena|deni|chhodna)\b"
    r"|\bmessage (hai|tha|deni|dena hai|dena tha)\b"
    r"|\bmessage (chhod|chod|chhodna|chodna|de do|dedo|de dena|dena|de dijiye|likh|likhwa|pahuncha|bhej|pass kar|le lo"
    r"|le lijiye|rakh)|\b(sandesh|sandesa)\b|\b(unko|unhe|unse|usko|inko|doctor ko|sir ko|madam ko)\b.*\bbata (dena|dijiye|dijiyega|do)\b"
)
_HI_CANCEL = r"|\braddh? (kar|karo|kardo|karna|karni|kijiye|karwa|karwana|karwani|ho)\b"
_HI_RESCHEDULE = (
    r"|\bbadal(na|ni|ne|o|iye|wa|wana|wani|vana|vani)?\b|\bpostpone\b|\bprepone\b"
    r"|\baage (kar|karo|kardo|badha|khiska|shift)|\bpeeche (kar|karo|kardo)\b"
    r"|\bdusr[aei] (time|din|date|samay|slot|waqt)\b"
)
_HI_LIST = (
    r"|\b(mera|meri|mere|hamara|hamari|apna|apni) (appointment|booking)s? (kab|kitne|kis|check|dekh|bata|ka time)"
    r"|\bappointment kab (hai|ka|tha)\b|\bkab hai (mera|meri|hamara) (appointment|booking)\b"
)
_HI_BOOK = (
    r"|\bmil(na|ni|ne) (hai|tha|chahta|chahti|chahte|ka|ke liye)\b|\bdikha(na|ni|ne) (hai|tha|ke liye)\b"
    r"|\b(slot|time|samay|waqt) (chahiye|milega|mil sakta|mil jayega)\b"
)
_HI_BYE = r"|\bbas (itna|itni|yahi|ye hi|yehi)\b|^bas( ji)?$|\baur kuch nahi(n)?\b|\bkuch aur nahi(n)?\b|\balvida\b"
# A Hindi question word anywhere ("aap kab khulte ho", "fees kitni hai"); not "kyun nahi" (why not: yes).
_HI_QUESTION = (
    r"|\b(kya|kab|kaise|kaisa|kaisi|kitna|kitni|kitne|kaun|kaunsa|konsa|kaunsi|konsi|kahan|kahaan|kidhar)\b"
    r"|\b(kyun|kyon|kyu)\b(?! nahi)"
)

_PATTERNS: tuple[tuple[str, str], ...] = (
    ("opt_out", OPT_OUT),  # before everything: "bye, and don't call me again" opts out
    ("not_interested", NOT_INTERESTED),  # before "bye": "no thanks, not interested"
    (
        "bye",
        r"\b(good ?bye|bye|that's all|that is all|that's it|nothing else|no thanks|no thank you|i'm done|hang up)\b"
        + _HI_BYE,
    ),
    (
        "human",
        r"\b(speak|talk) (to|with) (a |an |the |some )?(person|human|someone|somebody|agent|representative|operator|"
        r"receptionist|manager|front desk|staff|real)|\b(transfer|put) me\b|\bconnect me\b|\breal person\b|\bhuman\b"
        r"|\boperator\b|\brepresentative\b" + _HI_HUMAN,
    ),
    ("message", r"\b(take|leave|pass( on)?) a message\b|\bmessage for\b|\bleave (a |them a )?note\b" + _HI_MESSAGE),
    ("cancel", r"\bcancel\b" + _HI_CANCEL),
    (
        "reschedule",
        r"\b(reschedule|move|change|push|shift) (my |the |it|our )?(appointment|booking|visit|it)?|\bdifferent (time|day)\b"
        r"|\breschedul|(?<!n't )(?<!not )\bmake it (?:at |on |for |to |around )?(?:\d|today\b|tomorrow\b|next\b|this\b|\w+day\b)"
        + _HI_RESCHEDULE,
    ),
    (
        "list",
        r"\bwhen is my\b|\bwhat time is my\b|\bdo i have (an |any )?appointments?\b|\bmy appointments\b|\bcheck my (appointment|booking)\b"
        + _HI_LIST,
    ),
    (
        "book",
        r"\bbook\b|\bappointment\b|\bschedule\b|\bcome in\b|\bsee (the |a )?(doctor|dentist|hygienist)\b|\bavailab|\bfree (slot|time)\b"
        r"|\bopening\b|\bcheck ?up\b|\bcleaning\b|\bfollow ?up\b" + _HI_BOOK,
    ),
    (
        "question",
        r"^(what|how|when|where|why|which|who|do you|does|can you|can i|is there|are you|is it|could you)\b|\?$"
        + _HI_QUESTION,
    ),
)
_HI_NEG = r"(?!\s+(?:nahi|nahin|nai|na|mat)\b)"  # "ji nahi" is no, "haan nahi" not a yes
_YES = re.compile(
    r"^(yes|yeah|yep|yup|sure|ok|okay|alright|please|please do|correct|right|that's right|that is right|sounds good|"
    r"go ahead|absolutely|definitely|of course|i am|it is|that works|perfect|great)\b"
    r"|^(haan|haanji|haan ji|han|han ji|haa|haa ji|ha|ha ji|hanji|ji|jee|ji haan|ji han|ji ha|theek|thik|tik|theek hai"
    r"|thik hai|tik hai|theek h|thik h|bilkul|zaroor|zarur|jaroor|jarur|chalega|chalegi|chalo theek|sahi|sahi hai"
    r"|achha|accha|acha|achchha|kar do|kar dijiye|kar dijie|kardo|ho jayega|kyun nahi|kyon nahi|kyu nahi)\b" + _HI_NEG
)
_NO = re.compile(
    r"^(no|nope|nah|not really|not now|no thanks|no thank you|none|i'm not|i am not|not yet|no budget)\b"
    r"|^(nahi|nahin|nai|nahi ji|nahin ji|ji nahi|ji nahin|ji nai|na|naa|mat karo|mat kijiye|mat|rehne do|rahne do"
    r"|rehne dijiye|bilkul nahi|nahi chahiye)\b"
)
_FILLER = re.compile(
    r"^(um+|uh+|er+|well|so|oh|hi|hello|yes|yeah|sure|ok|okay|haan|haanji|han|ji|jee|achha|accha|acha|hmm+|namaste"
    r"|namaskar|haan ji)\b[ ,.!…]*"
)
# Hinglish ways to ask for someone ("billing se baat karao", "manager se milao")
_ASK_FOR = r"\b(speak|talk|through|connect|transfer|get|baat|milao|mila do|milwa do|jod do)\b"


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
        if named and re.search(_ASK_FOR, norm):
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
# "mera naam Priya Sharma hai", "mera naam hai Priya", "naam toh Rahul hai"
_NAAM = re.compile(
    r"\b(?:(?:mera|meraa|hamara|apna)\s+(?:naam|nam|name)|naam|nam)(?:\s+(?:hai|he|toh|to))?\s+"
    r"([A-Za-z][A-Za-z'\-]+(?:\s+[A-Za-z][A-Za-z'\-]+){0,3})",
    re.I,
)
# "main Rahul bol raha hoon", "Rahul Sharma bol rahi hoon"; "Rahul here", "Ana speaking"
_BOL_RAHA = re.compile(
    r"([A-Za-z][A-Za-z'\-]*(?:\s+[A-Za-z][A-Za-z'\-]*){0,3})\s+(?:bol|baat kar)\s+(?:raha|rahi|rha|rhi|rahe)\b", re.I
)
_HERE = re.compile(r"^([A-Za-z][A-Za-z'\-]*(?:\s+[A-Za-z][A-Za-z'\-]*)?)\s+(?:here|speaking)\s*(?:$|[,.!;])", re.I)
_LEADING = {"main", "mai", "mein", "me", "haan", "han", "ji", "haanji", "hello", "hi", "namaste", "namaskar", "sir",
            "madam", "ha", "achha", "accha", "ok", "okay", "yes", "yeah", "so", "um", "uh", "well", "oh", "hey"}  # fmt: skip
_NOT_NAMES = {
    "calling", "looking", "interested", "trying", "wondering", "not", "the", "a", "an", "just", "here", "fine",
    "good", "ok", "okay", "sure", "yes", "no", "ready", "available", "free", "sorry", "happy", "busy", "going",
    "hoping", "planning", "about", "for", "from", "with", "at", "on", "in", "and", "to", "me", "i", "that",
    "anyone", "someone", "somebody", "nobody", "everyone", "who", "is", "are", "it", "this", "we", "you", "he", "she",
    "they", "next", "today", "tomorrow", "tonight", "morning", "afternoon", "evening", "monday", "tuesday",
    "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february", "march", "april", "june", "july",
    "august", "september", "october", "november", "december", "book", "cancel", "appointment",
    # Hindi words that start an answer but are no name
    "haan", "han", "ji", "nahi", "nahin", "theek", "thik", "bilkul", "main", "mai", "mera", "meri", "mere", "aap",
    "aapka", "kal", "aaj", "parson", "abhi", "kya", "kab", "kaun", "bas", "achha", "accha", "acha", "hello", "hi",
    "namaste", "kisi", "koi", "mujhe", "hum", "humko", "yeh", "ye", "woh", "wo", "subah", "shaam", "dopahar", "raat",
    "agle", "doctor", "kuch", "sab", "ek", "do", "zaroor", "chalega", "sahi", "kar",
}  # fmt: skip
_STOP_AFTER = {
    "and", "from", "calling", "at", "please", "i", "i'd", "i'm", "with", "to", "for", "but", "so", "here", "speaking",
    "hai", "hain", "he", "hoon", "hun", "hu", "ji", "jee", "aur", "bol", "se", "ka", "ki", "ke", "ko", "hay",
}  # fmt: skip


# Words that are never part of a name ("radd kar do", "time badalna", "postpone my appointment")
# (Hindi words that are also names stay allowed: Abhi, Diya, Rahi, Kara, Dena, Sade, Parson, Mat, Kar ...)
_MAYBE_NAMES = {"ho", "na", "ye", "wo", "hu", "mai", "tum", "abhi", "diya", "rahi", "kara", "dena", "sade", "parson",
                "mat", "kar", "sham", "jee", "sab", "sahab"}  # fmt: skip
_NEVER_IN_NAME = (HINDI_WORDS - _MAYBE_NAMES) | {
    "my", "your", "our", "appointment", "appointments", "booking", "message", "time", "postpone", "prepone",
    "cancel", "book", "reschedule", "change", "fees", "chhod", "chod", "bye", "thanks", "thank", "please", "ha",
}  # fmt: skip


def _clean_name(words: list[str]) -> str | None:
    kept: list[str] = []
    for w in words:
        lw = w.lower().strip(".,!?…")
        if lw in _STOP_AFTER:
            break
        if lw:
            kept.append(lw)
    if not kept or kept[0] in _NOT_NAMES or any(ch.isdigit() for w in kept for ch in w):
        return None
    if any(w in _NEVER_IN_NAME for w in kept):
        return None
    return " ".join(w[:1].upper() + w[1:] for w in kept)


def _hindi_name(text: str) -> str | None:
    """A name in Hinglish: "mera naam Priya Sharma hai", "main Rahul bol raha hoon"."""
    if (m := _NAAM.search(text)) and (name := _clean_name(m.group(1).split())):
        return name
    if m := _BOL_RAHA.search(text):
        words = m.group(1).replace(",", " ").split()
        while words and words[0].lower() in _LEADING:
            words = words[1:]
        if 1 <= len(words) <= 3:
            return _clean_name(words)
    return None


def extract_name(text: str, *, expecting: bool = False) -> str | None:
    """A name the caller gives: "my name is Ana Lopez", "this is Ana"; when ``expecting``
    (we just asked for it), a bare answer like "Ana Lopez" or "uh, it's Ana" too."""
    if (m := _NAME_INTRO.search(text)) and (name := _clean_name(m.group(1).split())):
        return name
    if name := _hindi_name(text):
        return name
    rest = text.strip().strip(".!?")
    while (m2 := _FILLER.match(rest.lower())) and m2.end() > 0:
        rest = rest[m2.end() :]
    if (m3 := _HERE.match(rest)) and (name := _clean_name(m3.group(1).split())):
        return name
    if not expecting:
        return None
    words = rest.replace(",", " ").split()
    if 1 <= len(words) <= 3:
        return _clean_name(words)
    return None


_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "last": -1, "earliest": 0, "latest": -1}


# "pehla wala", "doosra wala", "teesra", "aakhri wala" ("dusra time" alone is "another time": not a pick)
_HI_ORDINALS = (
    (r"pehl[aie]|pahl[aie]|pehela", 0),
    (r"doosr[aie]|dusr[aie]|doosr|dusr", 1),
    (r"teesr[aie]|tisr[aie]|teesr", 2),
    (r"aakhri|akhri|aakhiri|aakhri|antim|last", -1),
)
_WALA = r"(wala|wali|wale|vala|vali|vale|waala|waali|waale|option|slot)"


def pick_ordinal(norm: str, count: int) -> int | None:
    """Index chosen by "the first one", "the second", "the last one", "doosra wala" among
    ``count`` options."""
    for words, index in _HI_ORDINALS:
        if re.search(
            rf"\b({words}) {_WALA}\b|^({words})( hi| wala)?( please| chalega| theek hai| de do| kar do)?$", norm
        ):
            i = index if index >= 0 else count - 1
            return i if 0 <= i < count else None
    for word, index in _ORDINALS.items():
        if re.search(rf"\b(the )?{word}( one| option| time)?\b", norm) and not re.search(rf"\b{word} of\b", norm):
            i = index if index >= 0 else count - 1
            return i if 0 <= i < count else None
    return None
