"""Turn-taking as a pure state machine: timelines in, actions out (no event loop)."""

from __future__ import annotations

from dialgraph.telephony.call.turn_policy import BARGE_IN, StartTurn, TurnPolicy, TurnState
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
