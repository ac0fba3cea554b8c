"""The offline model's fixed sentences, and their Hinglish versions (pure data and one
pure function).

The policy (``offline_policy``) says these in English; ``in_language`` puts a reply in the
caller's language sentence by sentence, so every fixed sentence here needs its Hinglish
version in ``HINGLISH`` (or a pattern in ``_HINGLISH_FORMS``); the tools' words are already
in the reply's language and pass through.
"""

from __future__ import annotations

import re

from dialgraph.server.core.language import Spoken

ASK_WHEN = "What day and time would suit you?"
ASK_WHEN_MOVE = "Sure. What day and time would you like to move it to?"
ASK_NAME = "Can I have your name for the booking, please?"
ASK_MESSAGE = "Of course. What message would you like me to pass on?"
ASK_ELSE = "Is there anything else I can help you with?"
ASK_WHAT_ELSE = "Of course. What else can I do for you?"
ASK_CHOICE = "Which time would suit you?"
ASK_NEED = "Happy to help. What are you looking for, and what would you use it for?"
ASK_TIMELINE = "Thanks. When are you hoping to get started?"
ASK_BUDGET = "And do you have a budget in mind?"
ASK_DECISION = "Are you the person who makes the decision, or is someone else involved?"
ASK_HOT = "Would you like me to connect you with our sales team right now, or book a follow-up call?"
ASK_FOLLOWUP = "Would you like to book a follow-up call with our team?"
SORRY = "Sorry, I didn't quite catch that."
ASK_QUESTION = "Of course. What would you like to know?"
# Said (fixed words, no model) once a call's spend cap is reached; the offline model answers
# what the caller says next (``ask == "message_or_transfer"``).
BUDGET_OFFER = (
    "I'm sorry, I can't go further with that on this call. I can take a message for the team, "
    "or transfer you to someone who can help. Which would you prefer?"
)
BUDGET_OFFER_ACT = "budget_offer"
GOODBYE = "Thank you for calling {company}. Goodbye!"
GOODBYE_OUT = "Thank you for your time. Goodbye!"
NOT_INTERESTED_BYE = "No problem at all. Thank you for your time, and have a good day. Goodbye!"
KEEP_BYE = "Great, your appointment stays as it is. We'll see you then. Goodbye!"
ASK_MOVE_OR_CANCEL = "No problem. Would you like to move it to another time, or cancel it?"
ASK_NEED_OUT = "Great, thank you. To start, what are you looking for, and what would you use it for?"
ASK_LATER = "No problem. Would you like to book a better time for a follow-up call?"
LATER_BYE = "No problem, we'll try you another time. Thank you, goodbye!"
HELP = {
    "scheduling": "I can book, move or cancel an appointment, or take a message. What would you like to do?",
    "support": "You can ask me a question about our services, or I can take a message. What would you like to do?",
    "sales": ASK_NEED,
}
QUALIFY = (("need", ASK_NEED), ("timeline", ASK_TIMELINE), ("budget", ASK_BUDGET), ("decision_maker", ASK_DECISION))

# Every fixed sentence above in Hinglish (Roman script), sentence by sentence, as a
# receptionist in India says it; "hum" (we) keeps the agent's words free of grammatical gender.
HINGLISH: dict[str, str] = {
    "What day and time would suit you?": "Aap kis din aur kitne baje aana chahenge?",
    "Sure.": "Zaroor.",
    "What day and time would you like to move it to?": "Aap ise kis din aur kitne baje par shift karna chahenge?",
    "Can I have your name for the booking, please?": "Booking ke liye aapka naam bata dijiye?",
    "Of course.": "Zaroor.",
    "What message would you like me to pass on?": "Aap kya message dena chahenge?",
    "Is there anything else I can help you with?": "Aur kuch madad chahiye aapko?",
    "What else can I do for you?": "Bataiye, aur kya kar sakte hain aapke liye?",
    "Which time would suit you?": "Aapko kaunsa time theek rahega?",
    "Happy to help.": "Zaroor, bataiye.",
    "What are you looking for, and what would you use it for?": "Aapko kya chahiye, aur kis kaam ke liye?",
    "Thanks.": "Thank you.",
    "When are you hoping to get started?": "Aap kab tak shuru karna chahte hain?",
    "And do you have a budget in mind?": "Aur aapka budget kitna hai?",
    "Are you the person who makes the decision, or is someone else involved?": (
        "Decision aap khud lenge, ya koi aur bhi involved hai?"
    ),
    "Would you like me to connect you with our sales team right now, or book a follow-up call?": (
        "Kya main aapko abhi hamari sales team se connect kar doon, ya follow-up call book kar doon?"
    ),
    "Would you like to book a follow-up call with our team?": "Kya hamari team ke saath follow-up call book kar doon?",
    "Sorry, I didn't quite catch that.": "Maaf kijiye, mujhe theek se samajh nahi aaya.",
    "I'm sorry, I can't go further with that on this call.": "Maaf kijiye, is call par isse aage madad nahi ho payegi.",
    "I can take a message for the team, or transfer you to someone who can help.": (
        "Team ke liye message le sakte hain, ya aapko kisi aise vyakti se connect kar sakte hain jo madad kar sake."
    ),
    "Which would you prefer?": "Aap kya chahenge?",
    "Goodbye!": "Namaste!",
    "Thank you for your time.": "Aapke time ke liye dhanyavaad.",
    "No problem at all.": "Koi baat nahi.",
    "Thank you for your time, and have a good day.": "Aapke time ke liye dhanyavaad, aapka din achha rahe.",
    "Great, your appointment stays as it is.": "Theek hai, aapka appointment waise hi rahega.",
    "We'll see you then.": "Tab milte hain.",
    "No problem.": "Koi baat nahi.",
    "Would you like to move it to another time, or cancel it?": (
        "Aap ise kisi aur time par shift karna chahenge, ya cancel karna hai?"
    ),
    "Great, thank you.": "Bahut achha, thank you.",
    "To start, what are you looking for, and what would you use it for?": (
        "Pehle bataiye, aapko kya chahiye, aur kis kaam ke liye?"
    ),
    "Would you like to book a better time for a follow-up call?": (
        "Kya follow-up call ke liye koi behtar time book kar doon?"
    ),
    "No problem, we'll try you another time.": "Koi baat nahi, hum phir kabhi call karenge.",
    "Thank you, goodbye!": "Dhanyavaad, namaste!",
    "I can book, move or cancel an appointment, or take a message.": (
        "Appointment book karna ho, shift karna ho ya cancel, ya koi message dena ho, sab ho jayega."
    ),
    "You can ask me a question about our services, or I can take a message.": (
        "Aap hamari services ke baare mein kuch bhi pooch sakte hain, ya message chhod sakte hain."
    ),
    "What would you like to do?": "Bataiye, kya karna hai?",
    "Thank you, I've noted all of that.": "Thank you, maine sab note kar liya hai.",
    "Would you like to leave a message?": "Kya aap message chhodna chahenge?",
    "Do you have a minute?": "Kya aapke paas ek minute hai?",
    "Please hold.": "Kripya line par bane rahiye.",
    "What would you like to know?": "Bataiye, kya jaanna chahenge?",
}
_HINGLISH_FORMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^Thank you for calling (.+)\.$"), r"\1 ko call karne ke liye dhanyavaad."),
    (re.compile(r"^Thanks, (.+)\.$"), r"Thank you, \1 ji."),
    (re.compile(r"^I'm connecting you to the (.+) now\.$"), r"Aapko abhi \1 se connect kar rahe hain."),
    (re.compile(r"^I'm calling from (.+) about (.+)\.$"), r"Hum \1 se call kar rahe hain, \2 ke baare mein."),
)
_SENTENCE = re.compile(r"(?<=[.?!])\s+")


def in_language(text: str, language: Spoken) -> str:
    """``text`` (the policy's English) in ``language``: each fixed sentence replaced by its
    Hinglish version (Hindi replies use the same Roman-script words); anything else (a
    tool's words, already in the reply's language) is kept as it is."""
    if language == "en" or not text:
        return text
    out: list[str] = []
    for sentence in _SENTENCE.split(text):
        said = HINGLISH.get(sentence)
        if said is None:
            for pattern, template in _HINGLISH_FORMS:
                if pattern.match(sentence):
                    said = pattern.sub(template, sentence)
                    break
        out.append(said if said is not None else sentence)
    return " ".join(out)
