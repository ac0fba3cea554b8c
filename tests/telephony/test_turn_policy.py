"""Turn-taking as a pure state machine: timelines in, actions out (no event loop)."""

from __future__ import annotations

import pytest

from dialgraph.server.core.settings import Settings
from dialgraph.telephony.call.session import turn_language
from dialgraph.telephony.call.turn_policy import (
    BARGE_IN,
    Preempt,
    StartTurn,
    TurnPolicy,
    TurnState,
    backchannel_vocabulary,
    words_of,
)
from dialgraph.telephony.speech.base import Final, Interim, SpeechStarted, UtteranceEnd


def speak(policy: TurnPolicy, start: float, ms: int, p: float = 0.9) -> list[float]:
    """Feed ``ms`` of speech frames from ``start``; return the times barge-in fired."""
    fired = []
    for i in range(ms // 20):
        at = start + i * 0.02
        if policy.vad(at, p) is not None:
            fired.append(round(at, 3))
    return fired


def agent_speaking(**kw: int) -> TurnPolicy:
    policy = TurnPolicy(**kw)
    policy.agent_turn_started()
    policy.agent_audio_started()
    assert policy.state is TurnState.AGENT_SPEAKING
    return policy


def test_turn_starts_on_speech_final_accumulating_earlier_finals() -> None:
    policy = TurnPolicy()
    assert policy.recognition(Interim("I would", 0.0, 0.5)) == ()
    assert policy.recognition(Final("I would like", 0.0, 0.8, speech_final=False)) == ()
    assert policy.recognition(Final("an appointment", 0.8, 1.6, speech_final=True)) == (
        StartTurn("I would like an appointment"),
    )
    assert policy.state is TurnState.THINKING


def test_a_stable_interim_while_listening_preempts_the_turn_so_far() -> None:
    policy = TurnPolicy()
    policy.recognition(Final("I would like", 0.0, 0.8, speech_final=False))
    assert policy.recognition(Interim("an appointment", 0.8, 1.6)) == ()  # still changing
    assert policy.recognition(Interim("an appointment", 0.8, 1.6, stable=True)) == (
        Preempt("I would like an appointment"),
    )
    assert policy.state is TurnState.LISTENING  # only the final takes the turn
    assert policy.recognition(Final("an appointment", 0.8, 1.6, speech_final=True)) == (
        StartTurn("I would like an appointment"),
    )


def test_a_stable_interim_during_the_agents_turn_is_no_preemption() -> None:
    policy = agent_speaking()
    assert Preempt("mm-hmm") not in policy.recognition(Interim("mm-hmm", 0.0, 0.1, stable=True))
    assert policy.recognition(Interim("   ", 0.0, 0.1, stable=True)) == ()


def test_utterance_end_after_finals_ends_the_turn_and_alone_does_nothing() -> None:
    policy = TurnPolicy()
    assert policy.recognition(UtteranceEnd(1.0)) == ()
    policy.recognition(Final("yes please", 0.0, 0.9, speech_final=False))
    assert policy.recognition(UtteranceEnd(1.0)) == (StartTurn("yes please"),)
    assert policy.recognition(SpeechStarted(2.0)) == ()


def test_empty_speech_final_does_not_start_a_turn() -> None:
    policy = TurnPolicy()
    assert policy.recognition(Final("  ", 0.0, 0.5, speech_final=True)) == ()
    assert policy.state is TurnState.LISTENING


def test_barge_in_needs_the_minimum_speech_length() -> None:
    policy = agent_speaking(barge_in_min_ms=200)
    assert speak(policy, 10.0, 180) == []  # 180 ms: not yet
    assert policy.state is TurnState.AGENT_SPEAKING
    policy2 = agent_speaking(barge_in_min_ms=200)
    assert speak(policy2, 10.0, 400) == [10.18]  # fires once, on the frame that completes 200 ms
    assert policy2.state is TurnState.LISTENING


def test_short_bursts_separated_by_silence_do_not_add_up() -> None:
    policy = agent_speaking(barge_in_min_ms=200)
    assert speak(policy, 10.0, 120) == []
    # 500 ms of silence (beyond the 300 ms hangover), then another short burst
    for i in range(25):
        assert policy.vad(10.12 + i * 0.02, 0.05) is None
    assert speak(policy, 10.62, 120) == []
    assert policy.state is TurnState.AGENT_SPEAKING


def test_no_barge_in_while_listening() -> None:
    policy = TurnPolicy()
    assert speak(policy, 0.0, 1000) == []


def test_mm_hm_does_not_interrupt_when_words_are_required() -> None:
    policy = agent_speaking(barge_in_min_ms=200, barge_in_min_words=2)
    assert speak(policy, 5.0, 300) == []  # long enough, but no words yet
    assert policy.recognition(Interim("mm-hm", 5.0, 5.3)) == ()
    assert policy.recognition(Final("mm-hm", 5.0, 5.3, speech_final=True)) == ()  # dropped backchannel
    assert policy.state is TurnState.AGENT_SPEAKING
    # Later, a real interruption.
    assert speak(policy, 8.0, 300) == []
    assert policy.recognition(Interim("wait, no", 8.0, 8.3)) == (BARGE_IN,)
    assert policy.state is TurnState.LISTENING
    assert policy.recognition(Final("wait, no, Tuesday", 8.0, 9.0, speech_final=True)) == (
        StartTurn("wait, no, Tuesday"),
    )


def test_a_final_can_interrupt_and_open_the_turn_at_once() -> None:
    policy = agent_speaking(barge_in_min_ms=200, barge_in_min_words=1)
    # No VAD at all (e.g. a recognizer-only setup): the word timings prove the duration.
    assert policy.recognition(Final("stop please", 3.0, 3.6, speech_final=True)) == (
        BARGE_IN,
        StartTurn("stop please"),
    )
    assert policy.state is TurnState.THINKING


def test_backchannel_finals_during_the_agent_turn_are_not_turns() -> None:
    policy = agent_speaking(barge_in_min_ms=400)
    assert policy.recognition(Final("ok", 3.0, 3.2, speech_final=True)) == ()
    policy.playback_done()
    assert policy.state is TurnState.LISTENING
    assert policy.recognition(Final("thanks", 4.0, 4.4, speech_final=True)) == (StartTurn("thanks"),)


def test_thinking_counts_as_the_agents_turn() -> None:
    policy = TurnPolicy()
    policy.recognition(Final("book me in", 0.0, 1.0))
    assert policy.state is TurnState.THINKING
    assert speak(policy, 1.5, 300) == [1.68]
    assert policy.state is TurnState.LISTENING


def test_playback_done_returns_the_floor() -> None:
    policy = agent_speaking()
    policy.playback_done()
    assert policy.state is TurnState.LISTENING
    policy.agent_audio_started()  # late: ignored while listening
    assert policy.state is TurnState.LISTENING


# --- backchannels ---------------------------------------------------------------------------------
BACKCHANNELS: list[str] = Settings(_env_file=None).backchannel_words  # type: ignore[call-arg]
SAID = [  # as recognizers write them
    "Mm-hm.", "Mm-hmm.", "Uh-huh.", "Yeah.", "Yes.", "Okay.", "OK.", "Right.", "Sure.", "Hmm.", "Hmmm...",
    "Haan.", "Haan ji.", "Achha.", "Accha.", "Ji.", "Theek hai.", "Hmm hmm.", "Mm hmm.", "Okay, okay.",
    "हाँ जी।", "अच्छा", "ठीक है",
]  # fmt: skip
INTERRUPTIONS = ["Wait.", "Ruko.", "Nahi nahi.", "Stop.", "Hold on.", "Excuse me.", "What time?", "Okay, but Tuesday."]


def backchannel_policy(**kw: int) -> TurnPolicy:
    policy = TurnPolicy(backchannel_words=BACKCHANNELS, **kw)
    policy.agent_turn_started()
    policy.agent_audio_started()
    return policy


def prefixes(text: str) -> list[str]:
    """The interims a streaming recognizer gives for ``text``, one more word each time."""
    words = text.split()
    return [" ".join(words[: i + 1]) for i in range(len(words))]


def test_words_are_compared_without_case_punctuation_hyphens_or_stretching() -> None:
    assert words_of("Mm-hmm.") == ["mmhmm"]
    assert words_of("Hmmm... OKAY!") == ["hmm", "okay"]
    assert words_of("Haaan ji, theek hai?") == ["haan", "ji", "theek", "hai"]
    assert words_of("हाँ जी। ठीक है") == ["हाँ", "जी", "ठीक", "है"]  # vowel signs stay with their letters
    assert backchannel_vocabulary(["haan ji", "Mm-Hmm"]) == {"haan", "ji", "mmhmm"}


@pytest.mark.parametrize("said", SAID)
def test_backchannels_while_the_agent_talks_do_not_interrupt(said: str) -> None:
    policy = backchannel_policy(barge_in_min_ms=200)
    fired = speak(policy, 5.0, 300)  # qualifies at 200 ms: held, no words yet
    for i, interim in enumerate(prefixes(said)):
        assert policy.recognition(Interim(interim, 5.0, 5.3 + 0.3 * i)) == ()
        fired += speak(policy, 5.3 + 0.3 * (i + 1), 200)
    assert policy.recognition(Final(said, 5.0, 5.3 + 0.3 * len(said.split()), speech_final=True)) == ()
    assert fired == [] and policy.state is TurnState.AGENT_SPEAKING
    # The backchannel was dropped: the next real words interrupt, and only they make the turn.
    assert speak(policy, 9.0, 200) == []
    assert policy.recognition(Interim("Wait", 9.0, 9.2)) == (BARGE_IN,)
    assert policy.recognition(Final("Wait.", 9.0, 9.3, speech_final=True)) == (StartTurn("Wait."),)


@pytest.mark.parametrize("said", INTERRUPTIONS)
def test_a_real_interruption_barges_in_at_the_first_interim_with_other_words(said: str) -> None:
    policy = backchannel_policy(barge_in_min_ms=200)
    assert speak(policy, 5.0, 220) == []  # long enough, but no words yet: held
    actions: list[object] = []
    for i, interim in enumerate(prefixes(said)):
        actions = list(policy.recognition(Interim(interim, 5.0, 5.2 + 0.2 * i)))
        if actions:
            break
    assert actions == [BARGE_IN]
    words = said.split()
    # the first word that is not a backchannel word decided ("Okay, but": at "but")
    assert i == next(n for n, w in enumerate(words) if words_of(w)[0] not in policy.backchannels)
    assert policy.state is TurnState.LISTENING
    assert policy.recognition(Final(said, 5.0, 5.8, speech_final=True)) == (StartTurn(said),)


def test_an_interim_before_the_minimum_waits_for_the_vad() -> None:
    policy = backchannel_policy(barge_in_min_ms=200)
    assert speak(policy, 5.0, 100) == []
    assert policy.recognition(Interim("Stop", 5.0, 5.1)) == ()  # 100 ms: too short yet
    assert speak(policy, 5.1, 200) == [5.18]  # the VAD completes 200 ms: the words already decided


def test_long_speech_without_words_barges_in_at_the_maximum() -> None:
    policy = backchannel_policy(barge_in_min_ms=200, backchannel_max_ms=800)
    assert speak(policy, 5.0, 1200) == [5.78]  # the frame that completes 800 ms of speech
    assert policy.state is TurnState.LISTENING


def test_each_backchannel_word_restarts_the_clock_until_the_words_stop_coming() -> None:
    policy = backchannel_policy(barge_in_min_ms=200, backchannel_max_ms=800)
    fired = speak(policy, 5.0, 600)
    said = "haan haan theek hai ji"
    for i, interim in enumerate(prefixes(said)):  # a word every 500 ms, speech throughout
        assert policy.recognition(Interim(interim, 5.0, 5.6 + 0.5 * i)) == ()
        fired += speak(policy, 5.6 + 0.5 * i, 500)
    assert fired == []  # 3.1 s of backchannel words: the agent went on
    # then speech goes on without new words (the recognizer fell behind): the last came when
    # the VAD was at 7.58, so the frame that completes 800 ms after it interrupts
    assert speak(policy, 8.1, 1000) == [8.36]


def test_held_finals_open_the_turn_when_the_caller_goes_on() -> None:
    policy = backchannel_policy(barge_in_min_ms=200)
    assert speak(policy, 5.0, 300) == []
    assert policy.recognition(Final("Okay,", 5.0, 5.3, speech_final=False, language="en")) == ()
    assert policy.recognition(Interim("wait", 5.4, 5.6)) == (BARGE_IN,)
    assert policy.recognition(Final("wait a second", 5.4, 6.0, speech_final=True, language="en")) == (
        StartTurn("Okay, wait a second", ("en",)),
    )


def test_finals_alone_decide_for_a_recognizer_without_interims() -> None:
    policy = backchannel_policy(barge_in_min_ms=200, backchannel_max_ms=800)
    assert speak(policy, 5.0, 500) == []
    assert policy.recognition(Final("Mm-hmm.", 5.0, 5.5, speech_final=True)) == ()
    assert policy.state is TurnState.AGENT_SPEAKING
    assert policy.recognition(Final("Stop please", 7.0, 7.6, speech_final=True)) == (
        BARGE_IN,
        StartTurn("Stop please"),
    )


def test_backchannels_while_thinking_are_dropped_too() -> None:
    policy = TurnPolicy(backchannel_words=BACKCHANNELS)
    assert policy.recognition(Final("I need Tuesday", 0.0, 1.0)) == (StartTurn("I need Tuesday"),)
    assert speak(policy, 1.5, 400) == []
    assert policy.recognition(Final("Okay.", 1.5, 1.9, speech_final=True)) == ()
    assert policy.state is TurnState.THINKING


def test_the_rule_off_is_the_old_vad_rule() -> None:
    policy = agent_speaking(barge_in_min_ms=200)  # no backchannel words: the default
    assert not policy.backchannels
    assert speak(policy, 5.0, 400) == [5.18]  # "mm-hmm" or not: 200 ms of speech interrupts
    empty = TurnPolicy(backchannel_words=[])
    empty.agent_turn_started()
    assert speak(empty, 5.0, 400) == [5.18]


def test_a_turn_carries_the_languages_of_its_finals() -> None:
    policy = TurnPolicy()
    policy.recognition(Final("kal subah", 0.0, 0.8, speech_final=False, language="hi"))
    policy.recognition(Final("ten o'clock", 0.8, 1.6, speech_final=False, language="en"))
    (turn,) = policy.recognition(Final("please", 1.6, 2.0, speech_final=True, language="en"))
    assert turn == StartTurn("kal subah ten o'clock please", ("hi", "en"))
    assert turn_language(turn) == "hi-en"
    assert turn_language(StartTurn("theek hai", ("hi",))) == "hi"
    assert turn_language(StartTurn("mujhe kal appointment chahiye")) == "hi-en"  # no tag: read from the text
    assert turn_language(StartTurn("I need an appointment")) == "en"
