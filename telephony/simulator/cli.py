"""The phone simulator: plays Twilio and a scripted caller against a running dialgraph server.

``simulate(scenario, url=...)`` holds one call over Twilio's real protocol (signed webhooks,
TwiML, the Media Streams WebSocket with marks and clears, ``<Dial>`` with a simulated human)
and returns a ``SimulationResult``: the transcript (the agent's audio transcribed with the
offline ASR), a per-turn latency table, a stereo recording and the checked expectations.
``simulate_main`` is ``dialgraph simulate SCENARIO --url URL``; exit status 1 when an
expectation fails. ``simulator.load.load`` runs many cheap calls for benchmarks.

``simulate_outbound`` plays the callee of an outbound call: it serves Twilio's REST API
(``twilio_api.TwilioApi``; the server must run with ``TWILIO_API_URL`` pointing at it), asks
the server to place the call (``POST /api/calls``), answers as a human, a voicemail, a busy
line... and reports what happened (``dialgraph simulate outbound_sales_human``, or
``dialgraph simulate --callee voicemail --to +15557770002 --flow sales``).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import structlog

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.simulator.call import TwilioCall
from dialgraph.telephony.simulator.caller import Phone, run_script
from dialgraph.telephony.simulator.expect import Observed, check_expectations
from dialgraph.telephony.simulator.outbound_call import OutboundCall
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
from dialgraph.telephony.simulator.scenario import (
    CALLEE_KINDS,
    BargeIn,
    Callee,
    Expectations,
    Outbound,
    Say,
    Scenario,
    ScenarioError,
    Step,
    WaitForAgent,
    load_scenario,
)
from dialgraph.telephony.simulator.twilio_api import TwilioApi
from dialgraph.telephony.simulator.webhooks import TwilioWebhooks, new_sid
from dialgraph.telephony.speech.base import SpeechRecognizer, SpeechSynthesizer

__all__ = [
    "OutboundResult",
    "SimulationResult",
    "render_caller_audio",
    "render_outbound",
    "simulate",
    "simulate_main",
    "simulate_outbound",
]

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


@dataclass
class OutboundResult:
    """One outbound call seen from the callee's side (see ``simulate_outbound``)."""

    scenario: str
    to: str
    call_sid: str | None
    ok: bool
    refused: dict[str, Any] | None = None  # the server's 409 detail: no call was placed
    status: str | None = None  # the call's final status (completed, busy, no-answer, ...)
    answered_by: str | None = None
    hung_up_by: str | None = None
    duration_s: int = 0
    callbacks: list[str] = field(default_factory=list)  # "answered: in-progress -> 204", in order
    failures: list[str] = field(default_factory=list)
    conversation: SimulationResult | None = None  # transcript, latencies, checks: when answered
    call: OutboundCall | None = field(default=None, repr=False)


DEFAULT_CALLEE_NUMBER = "+15557770001"
# A human callee with no scenario: listens, says one line, says goodbye.
DEFAULT_HUMAN_STEPS: tuple[Step, ...] = (
    WaitForAgent(),
    Say("Yes, I have a minute."),
    WaitForAgent(),
    Say("No thanks, goodbye."),
    WaitForAgent(),
)


def outbound_scenario(
    scenario: Scenario | str | Path | None,
    *,
    kind: str | None = None,
    to: str | None = None,
    flow: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> Scenario:
    """The outbound scenario to play: a loaded one with overrides, or one built from them."""
    if scenario is not None and not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if scenario is None:
        steps = DEFAULT_HUMAN_STEPS if (kind or "human") == "human" else ()
        scenario = Scenario(
            name=f"outbound_{kind or 'human'}", steps=steps, flow=flow or "sales", to_number=DEFAULT_CALLEE_NUMBER
        )
    outbound = scenario.outbound or Outbound(callee=Callee(steps=scenario.steps, quiet_ms=scenario.quiet_ms))
    callee = outbound.callee
    if kind is not None and kind != callee.kind:
        steps = (callee.steps or DEFAULT_HUMAN_STEPS) if kind == "human" else ()
        callee = dataclasses.replace(callee, kind=kind, steps=steps)  # type: ignore[arg-type]
    merged = {**outbound.context, **dict(context or {})}
    return dataclasses.replace(
        scenario,
        to_number=to or scenario.to_number,
        flow=flow or scenario.flow,
        outbound=dataclasses.replace(outbound, callee=callee, context=merged),
    )


async def simulate_outbound(
    scenario: Scenario | str | Path | None = None,
    *,
    url: str,
    admin_token: str = "dev-admin-token",
    auth_token: str = "dev-auth-token",
    account_sid: str = DEFAULT_ACCOUNT_SID,
    api: TwilioApi | None = None,
    api_port: int = 0,
    callee: str | None = None,
    to: str | None = None,
    flow: str | None = None,
    context: Mapping[str, Any] | None = None,
    synthesizer: SpeechSynthesizer | None = None,
    recognizer: SpeechRecognizer | None = None,
    transcribe: bool = True,
    out_dir: Path | None = None,
    database_url: str | None = None,
    max_duration_s: float = 600.0,
    http_client: httpx.AsyncClient | None = None,
) -> OutboundResult:
    """Play the callee of one outbound call the server at ``url`` places.

    Serves Twilio's REST API (``api``, or a new ``TwilioApi`` on ``api_port``: the server's
    ``TWILIO_API_URL`` must point at it, with the same account SID and auth token), asks the
    server to place the call (``POST /api/calls`` with the admin token), answers as the
    scenario's callee (``callee`` overrides its kind) and waits for the end. The callee's lines
    are spoken by ``synthesizer`` (default: the offline TTS); the agent's audio is transcribed
    with ``recognizer`` (default: the offline ASR) unless ``transcribe=False``.
    """
    play = outbound_scenario(scenario, kind=callee, to=to, flow=flow, context=context)
    assert play.outbound is not None
    who = play.outbound.callee
    async with AsyncExitStack() as stack:
        need_tts = synthesizer is None and any(isinstance(s, Say | BargeIn) for s in who.steps)
        need_asr = transcribe and recognizer is None and who.answers
        if need_tts or need_asr:
            built_asr, built_tts = await offline_speech(stack, asr=need_asr, tts=need_tts)
            recognizer = recognizer or built_asr
            synthesizer = synthesizer or built_tts
        if api is None:
            api = await stack.enter_async_context(
                TwilioApi(account_sid=account_sid, auth_token=auth_token, port=api_port, synthesizer=synthesizer)
            )
        elif synthesizer is not None:
            api.synthesizer = synthesizer
        api.callees[play.to_number] = who
        if http_client is None:
            http_client = await stack.enter_async_context(httpx.AsyncClient(timeout=30.0, trust_env=False))
        body: dict[str, Any] = {"to": play.to_number, "flow": play.flow or "sales", "context": play.outbound.context}
        if play.outbound.from_number:
            body["from"] = play.outbound.from_number
        try:
            response = await http_client.post(
                f"{url.rstrip('/')}/api/calls", json=body, headers={"Authorization": f"Bearer {admin_token}"}
            )
        except httpx.HTTPError as exc:
            failure = f"POST /api/calls failed: {type(exc).__name__}: {exc}"
            return OutboundResult(play.name, play.to_number, None, ok=False, failures=[failure])
        if response.status_code == 409:
            detail = response.json().get("detail") or {}
            return OutboundResult(play.name, play.to_number, None, ok=False, refused=detail)
        if response.status_code != 201:
            failure = f"POST /api/calls answered {response.status_code}: {response.text[:300]}"
            return OutboundResult(play.name, play.to_number, None, ok=False, failures=[failure])
        sid = str(response.json()["call_sid"])
        failures: list[str] = []
        try:
            call = await api.wait_ended(sid, max_duration_s)
        except KeyError:
            return OutboundResult(play.name, play.to_number, sid, ok=False, failures=["the call never reached Twilio"])
        except TimeoutError:
            call = api.calls[sid]
            failures.append(f"the call did not end within {max_duration_s:g} s")
        conversation = None
        if call.engine is not None and call.phone is not None:
            if call.engine.log.ended_by == "api":
                call.engine.log.ended_by = "agent"  # the server hung up through REST: the agent ended it
            server_call = await fetch_server_call(url, admin_token, sid, client=http_client)
            conversation = await _result(
                dataclasses.replace(play, from_number=play.to_number),  # the contact is the callee
                call.engine,
                call.phone,
                list(call.notes),
                server_call,
                recognizer if transcribe else None,
                out_dir,
                database_url,
            )
        failures += [f"{c.event} callback: {c.error or c.http_status}" for c in call.callbacks if c.error]
        return OutboundResult(
            scenario=play.name,
            to=play.to_number,
            call_sid=sid,
            ok=not failures and (conversation is None or conversation.ok),
            status=call.status,
            answered_by=call.answered_by,
            hung_up_by=call.hung_up_by,
            duration_s=call.duration_s,
            callbacks=[f"{c.event}: {c.value} -> {c.http_status or c.error}" for c in call.callbacks],
            failures=failures,
            conversation=conversation,
            call=call,
        )


def render_outbound(result: OutboundResult) -> str:
    """The outbound report: how the call went, then the conversation's report if it was answered."""
    lines = [f"== outbound {result.scenario}: the callee {result.to}"]
    if result.refused is not None:
        extra = ", ".join(f"{k}={v}" for k, v in result.refused.items() if k != "reason")
        lines.append(f"refused by the server: {result.refused.get('reason')}" + (f" ({extra})" if extra else ""))
        return "\n".join(lines)
    if result.call_sid is None:
        return "\n".join([*lines, *(f"FAIL {f}" for f in result.failures)])
    lines.append(
        f"call {result.call_sid}: {result.status}, answered by {result.answered_by or '-'}, "
        f"hung up by {result.hung_up_by or '-'}, {result.duration_s} s"
    )
    lines += [f"  callback {c}" for c in result.callbacks]
    call = result.call
    if call is not None:
        lines += [f"  <Say> {text}" for text in call.says]
        lines += [f"  <Play> {len(audio) / 8000:.1f} s of audio" for audio in call.plays]
        if call.redirects:
            lines.append(f"  the call was moved by REST {call.redirects} time(s)")
    if result.conversation is not None:
        lines.append(render_report(result.conversation))
    lines += [f"FAIL {f}" for f in result.failures]
    lines.append("OK" if result.ok else "NOT OK")
    return "\n".join(lines)


def _context_pairs(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ScenarioError(f"--context takes key=value, got {item!r}")
        out[key] = value
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dialgraph simulate", description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument(
        "scenario",
        nargs="?",
        help="a scenario YAML file, or the name of a shipped one (scheduling_demo, outbound_sales_human, ...)",
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server's public base URL")
    p.add_argument("--auth-token", default="dev-auth-token", help="Twilio auth token the server checks signatures with")
    p.add_argument("--admin-token", default="dev-admin-token", help="admin API token (call record, server timings)")
    p.add_argument("--database-url", default=None, help="the server's database, to check appointments and messages")
    p.add_argument("--out", default="out/simulate", help="where the recording, transcript and result JSON go")
    p.add_argument("--no-transcribe", action="store_true", help="skip the offline ASR of the agent's audio")
    out = p.add_argument_group("outbound: play the callee of a call the server places (POST /api/calls)")
    out.add_argument("--callee", choices=CALLEE_KINDS, help="who answers (default: the scenario's callee)")
    out.add_argument("--to", help="the callee's number (default: the scenario's `to`)")
    out.add_argument("--flow", help="the flow that calls (default: the scenario's, else sales)")
    out.add_argument("--context", action="append", default=[], metavar="KEY=VALUE", help="contact context, repeatable")
    out.add_argument(
        "--twilio-api-port",
        type=int,
        default=8765,
        help="port of the simulated Twilio REST API; start the server with TWILIO_API_URL=http://127.0.0.1:PORT",
    )
    out.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID, help="the server's TWILIO_ACCOUNT_SID")
    return p


def _outbound_main(args: argparse.Namespace) -> int:
    try:
        context = _context_pairs(args.context)
        play = outbound_scenario(args.scenario, kind=args.callee, to=args.to, flow=args.flow, context=context)
    except ScenarioError as exc:
        print(f"dialgraph simulate: {exc}", file=sys.stderr)
        return 2
    assert play.outbound is not None
    print(
        f"dialgraph simulate: Twilio's REST API on 127.0.0.1:{args.twilio_api_port}; asking {args.url} to call "
        f"{play.to_number} ({play.outbound.callee.kind}, flow {play.flow or 'sales'}) ...",
        flush=True,
    )
    result = asyncio.run(
        simulate_outbound(
            play,
            url=args.url,
            admin_token=args.admin_token,
            auth_token=args.auth_token,
            account_sid=args.account_sid,
            api_port=args.twilio_api_port,
            out_dir=Path(args.out),
            transcribe=not args.no_transcribe,
            database_url=args.database_url,
        )
    )
    print(render_outbound(result), flush=True)
    return 0 if result.ok else 1


def simulate_main(argv: list[str] | None = None) -> int:
    """``dialgraph simulate SCENARIO --url URL``: print the report; 1 when an expectation fails."""
    args = _parser().parse_args(argv)
    from dialgraph.server.core.logging import configure_logging

    configure_logging("WARNING")  # the report is the output; provider chatter is not
    if args.scenario is None and args.callee is None:
        print("dialgraph simulate: give a scenario, or --callee KIND for an outbound call", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario) if args.scenario is not None else None
    except ScenarioError as exc:
        print(f"dialgraph simulate: {exc}", file=sys.stderr)
        return 2
    if scenario is None or scenario.outbound is not None or args.callee is not None:
        args.scenario = scenario
        return _outbound_main(args)
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
