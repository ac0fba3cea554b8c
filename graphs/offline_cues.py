"""What a caller's words show, for the offline model's rules (pure regular expressions over
``spoken_time.normalise``d text, English and Hinglish): putting off a call, asking who is
calling, keeping or not making an appointment, a sales lead's timeline and budget, asking for
a person. The general intents (book, cancel, yes, no...) live in ``intents``."""

from __future__ import annotations

import re

from dialgraph.graphs.intents import is_no
from dialgraph.graphs.spoken_time import normalise

NAMES_BOOKED = re.compile(r"\b(my|the|our|that|mera|meri|apna|apni) (appointment|booking|visit)\b")
INSTEAD = re.compile(r"\b(instead|ki jagah|ke jagah|ke bajaye|ki bajaye)\b")
NOT_NOW = re.compile(r"\bnot (right )?now\b|\babhi nahi(n)?\b")
LATER = re.compile(
    r"\b(i'm busy|i am busy|busy right now|bad time|not a good time|call (me )?(back )?later|another time|in a meeting"
    r"|driving|busy (hoon|hu|hun)|baad mein (call|baat|phone)|abhi time nahi|meeting mein|drive kar raha)\b"
)
WHO_WHAT = re.compile(
    r"\b(who (is|'s) (this|it|calling|speaking)|who are you|what (is|'s) (this|it|that) (about|regarding|for)"
    r"|what is this|why (are you|did you|do you) call|what do you want|which company|where are you calling from"
    r"|kaun bol (raha|rahi|rahe)|aap kaun|kis (baare|liye|cheez)|kahan se (bol|call)|kyun call)\b"
)
KEEP = re.compile(
    r"\b(keep (it|that|the appointment|my appointment)|i'll be there|i will be there|i'll come|i will come"
    r"|that's fine|that is fine|still (good|fine|on|works)|works for me|confirm(ed)?|see you then"
    r"|rehne do|rakh do|rakhiye|aa (jaunga|jaungi|jayenge|jaenge)|aaunga|aaungi|wahi (rakho|theek)|same rakho|pakka)\b"
)
CANT = re.compile(
    r"\b(can't|cannot|can not|won't be able to) (make|come|do)\b"
    r"|\bnahi(n)? aa (paunga|paungi|paenge|payenge|sakta|sakti|sakte|sakunga|sakungi)\b"
)
ASKS_OPTIONS = re.compile(
    r"\b(what|which|any|anything|available|free|open|options?|koi|kuch|khali|kaunsa|konsa|kya kya)\b"
)
HEAR = re.compile(r"\b(hear|read|tell|remind|what|when|batao|bataiye|bata do|bata dijiye|kab|kitne baje)\b")


def is_hot(lead: dict[str, str]) -> bool:
    timeline = normalise(lead.get("timeline", ""))
    soon = bool(
        re.search(
            r"\b(asap|soon|now|immediately|this (week|month)|next (week|month)|right away|days?|weeks?"
            r"|jaldi|abhi|turant|is (hafte|mahine)|agle (hafte|mahine)|din|dino|hafte|hafton)\b",
            timeline,
        )
    )
    decides = lead.get("decision_maker") == "yes"
    budget = normalise(lead.get("budget", ""))
    has_budget = bool(budget) and not is_no(budget) and not re.search(r"\b(nahi|nahin|pata nahi|no budget)\b", budget)
    return soon and decides and has_budget


WANTS_TO_ASK = re.compile(
    r"\b(i have a (question|query|doubt)|i want to ask|can i ask|i wanted to ask|i had a (question|query|doubt)"
    r"|kuch (poochna|puchna|janna|jaanna)|ek (sawaal|sawal|query|doubt)|(poochna|puchna) (hai|tha|chahta|chahti))\b"
)
# what a sales caller wants to buy, even when its name has "appointment" or "booking" in it
PRODUCT = re.compile(
    r"\b(software|system|app|application|tool|platform|solution|crm|erp|website|portal|engine|module|saas)\b"
)
_VAGUE = re.compile(r"\b(information|info|details|jaankari|jankari|know more|enquiry|inquiry|brochure)\b")
HELLO = re.compile(
    r"^(hi|hello|hey|hallo|namaste|namaskar|namaskaram|vanakkam|good (morning|afternoon|evening)|haan ji|ji|hello ji)"
    r"( (there|ji|sir|madam|ma'am))?[ .!?]*$"
)
_YOURS = re.compile(
    r"\b(your|aapke|aapka|aapki|aap ke|aap ka|aap ki) (\w+ )?(software|products?|services?|solutions?)\b"
)


def vague(norm: str) -> bool:
    """ "I want some information about your software": interest, but no need said yet."""
    return _VAGUE.search(norm) is not None and PRODUCT.search(_YOURS.sub(" ", norm)) is None


I_DECIDE = re.compile(r"\b(i am|i'm|i do|i decide|myself|me only|main hi|mai hi|main khud|mai khud|khud|hum hi)\b")
OTHERS_DECIDE = re.compile(
    r"\b(boss|partner|manager|director|owner|committee|board|management|someone else|somebody else|koi aur"
    r"|papa|father|husband|wife|malik)\b"
)
TRANSFER_WORDS = re.compile(
    r"\b(transfer|connect|put me through|someone|somebody|person|human|agent|insaan|aadmi|kisi se|baat (karao|karwao|karwa do|kara do))\b"
)
