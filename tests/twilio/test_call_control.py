"""CallControl (real twilio-python client) against the local Twilio REST fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from dialgraph.server.core.settings import Settings
from dialgraph.telephony.twilio.call_control import CallControl, CallControlError, build_call_control
from tests.fakes.twilio_rest import FakeTwilioRest

ACCOUNT = "AC" + "1" * 32
TOKEN = "rest-auth-token-for-tests"
CALL = "CA" + "a" * 32


@pytest.fixture
async def rest() -> AsyncIterator[FakeTwilioRest]:
    async with FakeTwilioRest(account_sid=ACCOUNT, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def control(rest: FakeTwilioRest, tmp_path: Path) -> AsyncIterator[CallControl]:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=SecretStr(TOKEN),
        twilio_api_url=rest.url,
        _env_file=None,
    )
    cc = build_call_control(settings)
    try:
        yield cc
    finally:
        await cc.aclose()


async def test_hangup(rest: FakeTwilioRest, control: CallControl) -> None:
    rest.add_call(CALL)
    await control.hangup(CALL)
    (req,) = rest.requests
    assert (req.method, req.path, req.authorized) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json", True)
    assert req.pairs == (("Status", "completed"),)
    assert rest.calls[CALL].status == "completed"


async def test_redirect_sends_twiml(rest: FakeTwilioRest, control: CallControl) -> None:
    rest.add_call(CALL)
    answer = '<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number>+15550100001</Number></Dial></Response>'
    await control.redirect(CALL, answer)
    assert rest.requests[-1].form == {"Twiml": answer}
    assert rest.calls[CALL].twiml == answer


async def test_place_call(rest: FakeTwilioRest, control: CallControl) -> None:
    sid = await control.place_call(
        to="+15551230000",
        from_="+15559870000",
        url="https://voice.example.com/twilio/voice",
        status_callback="https://voice.example.com/twilio/status",
        machine_detection="DetectMessageEnd",
        async_amd=True,
        async_amd_status_callback="https://voice.example.com/twilio/amd",
        timeout_s=25,
    )
    assert sid in rest.calls and sid.startswith("CA")
    req = rest.requests[-1]
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
    assert req.form["To"] == "+15551230000" and req.form["From"] == "+15559870000"
    assert req.form["Url"] == "https://voice.example.com/twilio/voice"
    assert req.form["MachineDetection"] == "DetectMessageEnd"
    assert req.form["AsyncAmd"] == "true"
    assert req.form["AsyncAmdStatusCallback"] == "https://voice.example.com/twilio/amd"
    assert req.form["Timeout"] == "25"
    assert req.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]


async def test_retryable_failure_is_retried_once(rest: FakeTwilioRest, control: CallControl) -> None:
    rest.add_call(CALL)
    rest.fail_next(status=503, code=20503)
    await control.hangup(CALL)
    assert len(rest.requests) == 2
    assert rest.calls[CALL].status == "completed"


async def test_persistent_failure_raises_retryable(rest: FakeTwilioRest, control: CallControl) -> None:
    rest.add_call(CALL)
    rest.fail_next(status=500, code=20500, times=5)
    with pytest.raises(CallControlError) as info:
        await control.hangup(CALL)
    assert info.value.retryable and info.value.status == 500
    assert len(rest.requests) == 2  # one retry, not more
    assert rest.calls[CALL].status == "in-progress"


async def test_place_call_is_not_retried(rest: FakeTwilioRest, control: CallControl) -> None:
    rest.fail_next(status=503, code=20503)
    with pytest.raises(CallControlError) as info:
        await control.place_call(
            to="+15551230000", from_="+15559870000", url="https://v/x", status_callback="https://v/s"
        )
    assert info.value.retryable
    assert len(rest.requests) == 1 and not rest.calls


async def test_ended_call_redirect_is_not_live(rest: FakeTwilioRest, control: CallControl) -> None:
    rest.add_call(CALL, status="completed")
    with pytest.raises(CallControlError) as info:
        await control.redirect(CALL, "<Response/>")
    assert (info.value.status, info.value.code, info.value.retryable, info.value.call_not_live) == (
        400,
        21220,
        False,
        True,
    )
    assert len(rest.requests) == 1


async def test_unknown_call(rest: FakeTwilioRest, control: CallControl) -> None:
    with pytest.raises(CallControlError) as info:
        await control.hangup("CA" + "f" * 32)
    assert info.value.status == 404 and info.value.call_not_live and not info.value.retryable


async def test_bad_credentials(rest: FakeTwilioRest) -> None:
    cc = CallControl(account_sid=ACCOUNT, auth_token="wrong", api_url=rest.url)
    rest.add_call(CALL)
    try:
        with pytest.raises(CallControlError) as info:
            await cc.hangup(CALL)
    finally:
        await cc.aclose()
    assert info.value.status == 401 and not info.value.retryable
    assert rest.calls[CALL].status == "in-progress"


async def test_unreachable_api_is_retryable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cc = CallControl(account_sid=ACCOUNT, auth_token=TOKEN, api_url=f"http://127.0.0.1:{port}", retry_delay_s=0)
    try:
        with pytest.raises(CallControlError) as info:
            await cc.hangup(CALL)
    finally:
        await cc.aclose()
    assert info.value.retryable and info.value.status is None


async def test_aclose_is_idempotent(control: CallControl) -> None:
    await control.aclose()
    await control.aclose()


async def test_fetch_status(rest: FakeTwilioRest, control: CallControl) -> None:
    rest.add_call(CALL, status="in-progress", answered_by="machine_end_beep")
    assert await control.fetch_status(CALL) == ("in-progress", "machine_end_beep")
    (req,) = rest.requests
    assert (req.method, req.path, req.authorized) == ("GET", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json", True)
    rest.calls[CALL].status, rest.calls[CALL].answered_by = "completed", None
    assert await control.fetch_status(CALL) == ("completed", None)


async def test_fetch_status_is_retried_once(rest: FakeTwilioRest, control: CallControl) -> None:
    rest.add_call(CALL, status="ringing")
    rest.fail_next(status=503, code=20503)
    assert await control.fetch_status(CALL) == ("ringing", None)
    assert [r.method for r in rest.requests] == ["GET", "GET"]
    rest.fail_next(status=500, code=20500, times=2)
    with pytest.raises(CallControlError) as info:
        await control.fetch_status(CALL)
    assert info.value.retryable and len(rest.requests) == 4


async def test_fetch_status_of_unknown_call(rest: FakeTwilioRest, control: CallControl) -> None:
    with pytest.raises(CallControlError) as info:
        await control.fetch_status("CA" + "e" * 32)
    assert info.value.call_not_live and not info.value.retryable
    assert len(rest.requests) == 1
