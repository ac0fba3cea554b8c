"""The phone simulator: plays Twilio and a scripted caller against a running dialgraph server.

``simulate(scenario, url=...)`` holds one call over Twilio's real protocol (signed webhooks,
TwiML, the Media Streams WebSocket with marks and clears, ``<Dial>`` with a simulated human)
and returns a ``SimulationResult``: the transcript (the agent's audio transcribed with the
offline ASR), a per-turn latency table, a stereo recording and the checked expectations.
``simulate_main`` is ``dialgraph simulate SCENARIO --url URL``; exit status 1 when an
expectation fails. ``simulator.load.load`` runs many cheap calls for benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import wave
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import structlog

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.simulator.call import TwilioCall
from dialgraph.telephony.simulator.caller import Phone, run_script
from dialgraph.telephony.simulator.expect import Observed, check_expectations
from dialgraph.telephony.simulator.protocol import DEFAULT_ACCOUNT_SID, SAMPLE_RATE
from dialgraph.telephony.simulator.report import (
    SimulationResult,
    TranscriptLine,
    TurnLatency,
    agent_segments,
    percentile,
    render_report,
    transcribe_turn,
    write_stereo_wav,
)
from dialgraph.telephony.simulator.scenario import BargeIn, Expectations, Say, Scenario, ScenarioError, load_scenario
from dialgraph.telephony.simulator.webhooks import TwilioWebhooks, new_sid
from dialgraph.telephony.speech.base import SpeechRecognizer, SpeechSynthesizer

__all__ = ["SimulationResult", "render_caller_audio", "simulate", "simulate_main"]

log = structlog.get_logger(__name__)


async def offline_speech(stack: AsyncExitStack, *, asr: bool, tts: bool) -> tuple[Any, Any]:
    """The embedded offline recognizer and/or synthesizer (closed with ``stack``). The
    synthesizer is the scripted caller's voice: it renders a line the same on every run,
    so a scenario replays the same audio to the server each time."""
    from dialgraph.server.core.settings import Settings
    from dialgraph.telephony.speech import providers  # type: ignore[attr-defined]

    settings = Settings(asr="offline", tts="offline")
    recognizer = await providers.build_recognizer(settings, stack) if asr else None
    synthesizer = await providers.build_synthesizer(settings, stack, variation=False) if tts else None
    return recognizer, synthesizer


async def synthesize_text(synthesizer: SpeechSynthesizer, text: str) -> bytes:
    async def one() -> AsyncIterator[str]:
        yield text

    return b"".join([chunk.audio async for chunk in synthesizer.synthesize(one())])


def read_wav_mulaw(path: Path) -> bytes:
    """A WAV file as 8 kHz mono mu-law (any rate, mono or stereo, 16-bit)."""
    import soxr

    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ScenarioError(f"{path}: only 16-bit WAV files are supported")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
        rate = w.getframerate()
    mono = pcm.mean(axis=1).astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    linear = (np.clip(mono, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return bytes(audioop.lin2ulaw(linear, 2))


async def render_caller_audio(scenario: Scenario, synthesizer: SpeechSynthesizer | None) -> dict[str, bytes]:
    """Every caller line of ``scenario`` as mu-law, keyed by its text (or WAV path)."""
    audio: dict[str, bytes] = {}
    for step in scenario.steps:
        if isinstance(step, Say) and step.wav is not None:
            audio[str(step.wav)] = read_wav_mulaw(step.wav)
        elif isinstance(step, Say | BargeIn) and step.text not in audio:
            if synthesizer is None:
                raise ScenarioError("caller lines need a synthesizer (or pre-rendered caller_audio)")
            audio[step.text] = await synthesize_text(synthesizer, step.text)
    return audio


async def fetch_server_call(
    url: str, admin_token: str | None, call_sid: str, *, client: httpx.AsyncClient | None = None
) -> dict[str, Any] | None:
    """The server's call record and events (admin API), or None when unavailable."""
    if not admin_token:
        return None
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0, trust_env=False))
        try:
            response = await client.get(
                f"{url.rstrip('/')}/api/calls/{call_sid}", headers={"Authorization": f"Bearer {admin_token}"}
            )
        except httpx.HTTPError:
            return None
    if response.status_code != 200:
        return None
    data: dict[str, Any] = response.json()
    return data


def _server_agent_events(server_call: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [e for e in (server_call or {}).get("events", []) if e.get("role") == "agent" and e.get("kind") == "turn"]


def _server_reply_latencies(server_call: dict[str, Any] | None) -> list[float | None]:
    """The server's own share of each reply to the caller (final transcript / DTMF -> first frame sent)."""
    return [
        e.get("latency_ms")
        for e in _server_agent_events(server_call)
        if (e.get("data") or {}).get("trigger") in ("caller", "dtmf")
    ]


async def simulate(
    scenario: Scenario | str | Path,
    *,
    url: str,
    auth_token: str = "dev-auth-token",
    admin_token: str | None = None,
    out_dir: Path | None = None,
    transcribe: bool = True,
    database_url: str | None = None,
    synthesizer: SpeechSynthesizer | None = None,
    recognizer: SpeechRecognizer | None = None,
    caller_audio: Mapping[str, bytes] | None = None,
    account_sid: str = DEFAULT_ACCOUNT_SID,
    record: bool = True,
    max_duration_s: float = 600.0,
    linger_s: float = 8.0,
    check: bool = True,
    poll_s: float = 0.05,
    http_client: httpx.AsyncClient | None = None,
) -> SimulationResult:
    """Hold one simulated call against the server at ``url`` and check the scenario.

    ``caller_audio`` (text or WAV path -> mu-law) skips rendering the caller's lines;
    ``check=False`` checks only the protocol (load mode); ``record=False`` keeps no audio.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    async with AsyncExitStack() as stack:
        need_tts = caller_audio is None and synthesizer is None and bool(scenario.lines())
        need_asr = transcribe and recognizer is None
        if need_tts or need_asr:
            built_asr, built_tts = await offline_speech(stack, asr=need_asr, tts=need_tts)
            recognizer = recognizer or built_asr
            synthesizer = synthesizer or built_tts
        audio = dict(caller_audio) if caller_audio is not None else await render_caller_audio(scenario, synthesizer)
        webhooks = TwilioWebhooks(base_url=url, auth_token=auth_token, client=http_client)
        stack.push_async_callback(webhooks.aclose)
        phone = Phone(record=record, poll_s=poll_s)
        call = TwilioCall(
            webhooks=webhooks,
            phone=phone,
            account_sid=account_sid,
            call_sid=new_sid("CA"),
            from_number=scenario.from_number,
            to_number=scenario.to_number,
        )
        notes: list[str] = []

        def audio_for(step: Say | BargeIn) -> bytes:
            key = str(step.wav) if isinstance(step, Say) and step.wav is not None else step.text
            return audio[key]

        await _hold_call(call, phone, scenario, audio_for, notes, max_duration_s=max_duration_s, linger_s=linger_s)
        server_call = await fetch_server_call(url, admin_token, call.call_sid, client=http_client)
        expect = (
            scenario.expect if check else Expectations(max_protocol_violations=scenario.expect.max_protocol_violations)
        )
        return await _result(
            dataclasses.replace(scenario, expect=expect),
            call,
            phone,
            notes,
            server_call,
            recognizer if transcribe else None,
            out_dir,
            database_url,
        )


async def _hold_call(
    call: TwilioCall,
    phone: Phone,
    scenario: Scenario,
    audio_for: Any,
    notes: list[str],
    *,
    max_duration_s: float,
    linger_s: float,
) -> None:
    async def script() -> None:
        await run_script(phone, scenario, audio_for, notes=notes)
        if not phone.ended.is_set():
            # The script is over: give the agent a moment to end the call, then hang up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(phone.ended.wait(), linger_s)
            if not phone.ended.is_set():
                await phone.hang_up()

    try:
        async with asyncio.timeout(max_duration_s), asyncio.TaskGroup() as tg:
            tg.create_task(call.run())
            tg.create_task(script())
    except TimeoutError:
        notes.append(f"the call did not end within {max_duration_s:g} s")


async def _result(
    scenario: Scenario,
    call: TwilioCall,
    phone: Phone,
    notes: list[str],
    server_call: dict[str, Any] | None,
    recognizer: SpeechRecognizer | None,
    out_dir: Path | None,
    database_url: str | None,
) -> SimulationResult:
    clog = call.log
    segments = agent_segments(bytes(phone.recorder.agent), phone.boundaries) if phone.record else []
    server_agent = _server_agent_events(server_call)
    if recognizer is not None:
        agent_texts = list(await asyncio.gather(*(transcribe_turn(recognizer, seg.audio) for seg in segments)))
    elif len(server_agent) == len(segments):
        agent_texts = [str(e.get("text") or "") for e in server_agent]
    else:
        agent_texts = [f"[{seg.end - seg.start:.1f} s of agent audio]" for seg in segments]
    transcript = [
        TranscriptLine(seg.start, "agent", text or f"[{seg.end - seg.start:.1f} s, no words recognised]")
        for seg, text in zip(segments, agent_texts, strict=True)
    ]
    for turn in phone.turns:
        if turn.start is not None:
            text = f"[DTMF {turn.text}]" if turn.kind == "dtmf" else turn.text
            transcript.append(
                TranscriptLine(turn.start, "caller", text + (" (barge-in)" if turn.kind == "barge_in" else ""))
            )
    for say in clog.says:
        transcript.append(TranscriptLine(say.at, "twilio", f"<Say> {say.text}"))
    for t in clog.transfers:
        whisper = f' whisper "{" ".join(t.whisper)}"' if t.whisper else ""
        transcript.append(
            TranscriptLine(t.at, "twilio", f"<Dial {t.number}>{whisper} -> {t.status} after {t.ring_s:.1f} s")
        )
    transcript.sort(key=lambda line: (round(line.at, 1), line.role != "caller"))

    server_ms = _server_reply_latencies(server_call)
    turns: list[TurnLatency] = []
    replied = 0
    for i, turn in enumerate(phone.turns, start=1):
        latency = turn.latency_ms
        service = None
        if latency is not None and replied < len(server_ms):
            value = server_ms[replied]
            service = float(value) if value is not None else None
            replied += 1
        clear_ms = (turn.clear_at - turn.start) * 1000 if turn.clear_at is not None and turn.start is not None else None
        caller = f"[DTMF {turn.text}]" if turn.kind == "dtmf" else turn.text
        turns.append(TurnLatency(i, turn.kind, caller, latency, service, clear_ms))

    barge_ins = [t for t in phone.turns if t.kind == "barge_in"]
    observed = Observed(
        call_sid=call.call_sid,
        from_number=scenario.from_number,
        ended_by=clog.ended_by,
        agent_text=agent_texts if recognizer is not None else [str(e.get("text") or "") for e in server_agent],
        barge_ins=len(barge_ins),
        barge_ins_cleared=sum(1 for t in barge_ins if t.clear_at is not None),
        violations=len(clog.violations),
        dial_statuses=[t.status for t in clog.transfers],
    )
    checks = await check_expectations(scenario.expect, observed, server_call=server_call, database_url=database_url)
    failures = notes + clog.notes + [f"webhook {m} {p} answered {s}" for m, p, s in call.webhooks.log.errors]
    gaps = [g for leg in clog.legs for g in leg.arrival_gaps_ms]
    result = SimulationResult(
        scenario=scenario.name,
        call_sid=call.call_sid,
        ok=all(c.ok for c in checks) and not failures,
        checks=checks,
        failures=failures,
        transcript=transcript,
        turns=turns,
        violations=[{"at": v.at, "reason": v.reason, "raw": v.raw} for v in clog.violations],
        transfers=[{"number": t.number, "whisper": list(t.whisper), "status": t.status} for t in clog.transfers],
        ended_by=clog.ended_by,
        legs=phone.legs,
        clears=len(phone.clears),
        marks_echoed=sum(leg.marks_echoed for leg in clog.legs),
        duration_s=phone.now(),
        agent_gap_p99_ms=percentile(gaps, 99),
        underruns=sum(len(leg.underruns_ms) for leg in clog.legs),
        server_call=server_call,
    )
    if out_dir is not None:
        await asyncio.to_thread(_write_outputs, result, out_dir, phone, scenario.name)
    return result


def _write_outputs(result: SimulationResult, out_dir: Path, phone: Phone, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if phone.record:
        result.recording = write_stereo_wav(
            out_dir / f"{name}.wav", bytes(phone.recorder.caller), bytes(phone.recorder.agent)
        )
    (out_dir / f"{name}.json").write_text(result.to_json(), encoding="utf-8")
    (out_dir / f"{name}.txt").write_text(render_report(result) + "\n", encoding="utf-8")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dialgraph simulate", description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("scenario", help="a scenario YAML file, or the name of a shipped one (scheduling_demo, ...)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server's public base URL")
    p.add_argument("--auth-token", default="dev-auth-token", help="Twilio auth token the server checks signatures with")
    p.add_argument("--admin-token", default="dev-admin-token", help="admin API token (call record, server timings)")
    p.add_argument("--database-url", default=None, help="the server's database, to check appointments and messages")
    p.add_argument("--out", default="out/simulate", help="where the recording, transcript and result JSON go")
    p.add_argument("--no-transcribe", action="store_true", help="skip the offline ASR of the agent's audio")
    return p


def simulate_main(argv: list[str] | None = None) -> int:
    """``dialgraph simulate SCENARIO --url URL``: print the report; 1 when an expectation fails."""
    args = _parser().parse_args(argv)
    from dialgraph.server.core.logging import configure_logging

    configure_logging("WARNING")  # the report is the output; provider chatter is not
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"dialgraph simulate: {exc}", file=sys.stderr)
        return 2
    print(f"dialgraph simulate: calling {args.url} as {scenario.from_number} -> {scenario.to_number} ...", flush=True)
    result = asyncio.run(
        simulate(
            scenario,
            url=args.url,
            auth_token=args.auth_token,
            admin_token=args.admin_token,
            out_dir=Path(args.out),
            transcribe=not args.no_transcribe,
            database_url=args.database_url,
        )
    )
    print(render_report(result), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(simulate_main())
