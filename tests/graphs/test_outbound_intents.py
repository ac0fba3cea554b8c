"""The words that opt a person out, or say they are not interested (English and Hinglish),
and the ones that must not."""

from __future__ import annotations

import pytest

from dialgraph.graphs.intents import classify
from dialgraph.graphs.spoken_time import normalise

OPT_OUTS = [
    "Please stop calling me!",
    "Stop calling this number.",
    "Don't call me again.",
    "don’t call me anymore",
    "Do not call this number again",
    "Never call me again",
    "Don't call me.",
    "Remove me from your list",
    "Remove me from your calling list, please",
    "Take me off your list",
    "take my number off your list",
    "Put me on your do not call list",
    "I want to unsubscribe",
    "I don't want any more calls",
    "Bye, and don't call me again",
    "No thanks, stop calling me",
    "Mujhe call mat karo",
    "call mat karna",
    "phone mat karo",
    "dobara call mat karna",
    "please call band karo",
    "mujhe calls nahi chahiye",
]
NOT_OPT_OUTS = [
    "Can you call me back tomorrow?",
    "Don't call me before 10, I'm at work",
    "Please call me on my mobile",
    "I'd like to cancel my appointment",
    "No thanks, that's all",
    "I'm not interested",
    "Take me to the front desk",
    "Can you remind me of my appointment?",
]


@pytest.mark.parametrize("words", OPT_OUTS)
def test_opt_out_words(words: str) -> None:
    for flow in ("sales", "scheduling", "support"):
        assert classify(normalise(words), flow) == "opt_out", (words, flow)


@pytest.mark.parametrize("words", NOT_OPT_OUTS)
def test_words_that_are_not_an_opt_out(words: str) -> None:
    assert classify(normalise(words), "sales") != "opt_out", words


@pytest.mark.parametrize(
    "words",
    ["I'm not interested", "No thanks, not interested", "It's not for me", "We don't need it", "interest nahi hai"],
)
def test_not_interested_words(words: str) -> None:
    assert classify(normalise(words), "sales") == "not_interested", words


def test_goodbye_is_still_goodbye() -> None:
    assert classify(normalise("No thanks, that's all. Bye!"), "scheduling") == "bye"
