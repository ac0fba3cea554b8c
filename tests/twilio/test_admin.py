"""Admin API: bearer auth, and actions carried out through the Twilio REST fake."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from dialgraph.server.core.call_store import add_events, get_call, update_call
from dialgraph.server.core.models import CallEvent
from dialgraph.telephony.simulator.webhooks import call_params, new_call_sid
from tests.twilio.conftest import ADMIN_TOKEN, CALLER, PUBLIC_URL, SUPPORT_NUMBER, TwilioApp


async def live_call(tw: TwilioApp, *, to_number: str = SUPPORT_NUMBER) -> str:
    sid = new_call_sid()
    response = await tw.twilio.post("/twilio/voice", call_params(sid, to_number=to_number))
    assert response.status_code == 200
    await tw.twilio.post("/twilio/status", call_params(sid, status="in-progress"))
    tw.rest.add_call(sid)
    return sid


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    ],
)
async def test_admin_requires_token(tw: TwilioApp, headers: dict[str, str]) -> None:
    sid = await live_call(tw)
    for method, path, body in [
        ("GET", f"/api/calls/{sid}", None),
        ("POST", f"/api/calls/{sid}/hangup", None),
        ("POST", f"/api/calls/{sid}/transfer", {"target": "billing"}),
    ]:
        response = await tw.http.request(method, path, headers=headers, json=body)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
    assert tw.rest.requests == []
    call = await get_call(tw.db, sid)
    assert call is not None and call.outcome is None


async def test_show_call_with_transcript(tw: TwilioApp) -> None:
    sid = await live_call(tw)
    await add_events(
        tw.db,
        [
            CallEvent(call_sid=sid, kind="turn", role="caller", text="I need a refund"),
            CallEvent(call_sid=sid, kind="turn", role="agent", text="Sure, let me", interrupted=True),
        ],
    )
    response = await tw.http.get(f"/api/calls/{sid}", headers=tw.admin_headers())
    assert response.status_code == 200
    body = response.json()
    assert (body["sid"], body["flow"], body["status"], body["from_number"]) == (sid, "support", "in-progress", CALLER)
    turns = [(e["role"], e["text"], e["interrupted"]) for e in body["events"] if e["kind"] == "turn"]
    assert turns == [("caller", "I need a refund", False), ("agent", "Sure, let me", True)]
    assert (await tw.http.get(f"/api/calls/{new_call_sid()}", headers=tw.admin_headers())).status_code == 404


async def test_hangup_through_rest(tw: TwilioApp) -> None:
    sid = await live_call(tw)
    response = await tw.http.post(f"/api/calls/{sid}/hangup", headers=tw.admin_headers())
    assert response.status_code == 200
    assert response.json() == {"sid": sid, "action": "hangup", "target": None}
    (req,) = tw.rest.requests
    assert req.authorized and req.call_sid == sid and req.form == {"Status": "completed"}
    assert tw.rest.calls[sid].status == "completed"
    call = await get_call(tw.db, sid)
    assert call is not None and call.outcome == "ended_by_admin"


async def test_hangup_unknown_or_finished_call(tw: TwilioApp) -> None:
    assert (await tw.http.post(f"/api/calls/{new_call_sid()}/hangup", headers=tw.admin_headers())).status_code == 404
    sid = await live_call(tw)
    await update_call(tw.db, sid, status="completed")
    assert (await tw.http.post(f"/api/calls/{sid}/hangup", headers=tw.admin_headers())).status_code == 409
    assert tw.rest.requests == []


async def test_hangup_rest_failure_restores_call(tw: TwilioApp) -> None:
    sid = await live_call(tw)
    tw.rest.fail_next(status=500, code=20500, times=2)
    response = await tw.http.post(f"/api/calls/{sid}/hangup", headers=tw.admin_headers())
    assert response.status_code == 503
    call = await get_call(tw.db, sid)
    assert call is not None and call.outcome is None  # a later dropped stream still reconnects


async def test_transfer_redirects_live_call_to_dial(tw: TwilioApp) -> None:
    sid = await live_call(tw)
    response = await tw.http.post(
        f"/api/calls/{sid}/transfer", headers=tw.admin_headers(), json={"target": "billing", "summary": "VIP caller."}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"sid": sid, "action": "transfer", "target": "billing"}
    (req,) = tw.rest.requests
    assert req.call_sid == sid and set(req.form) == {"Twiml"}
    root = ET.fromstring(req.form["Twiml"])
    assert [c.tag for c in root] == ["Dial"]
    assert root[0].attrib["action"] == f"{PUBLIC_URL}/twilio/dial-ended"
    assert root[0][0].text == "+15550100002"
    assert root[0][0].attrib["url"] == f"{PUBLIC_URL}/twilio/whisper?sid={sid}"
    call = await get_call(tw.db, sid)
    assert call is not None
    assert (call.outcome, call.transfer_target, call.transfer_reason, call.transfer_summary) == (
        "transfer_requested",
        "billing",
        "admin",
        "VIP caller.",
    )
    whisper = await tw.twilio.get("/twilio/whisper", {"sid": sid})
    assert ET.fromstring(whisper.text)[0].text == "VIP caller."
    # Nobody answers: the caller goes back to the agent on the same thread.
    back = await tw.twilio.post("/twilio/dial-ended", call_params(sid, DialCallStatus="busy"))
    assert "transfer_failed:busy" in back.text


@pytest.mark.parametrize("target", ["sales", "+15551112222", "front_desk"])
async def test_transfer_refuses_unconfigured_target(tw: TwilioApp, target: str) -> None:
    sid = await live_call(tw)
    response = await tw.http.post(f"/api/calls/{sid}/transfer", headers=tw.admin_headers(), json={"target": target})
    assert response.status_code == 422
    assert tw.rest.requests == []
    call = await get_call(tw.db, sid)
    assert call is not None and call.outcome is None and call.transfer_target is None


async def test_transfer_body_validated(tw: TwilioApp) -> None:
    sid = await live_call(tw)
    for body in [{}, {"target": ""}, {"target": "billing", "number": "+15551112222"}]:
        response = await tw.http.post(f"/api/calls/{sid}/transfer", headers=tw.admin_headers(), json=body)
        assert response.status_code == 422
    assert tw.rest.requests == []


async def test_transfer_rest_failure_restores_call(tw: TwilioApp) -> None:
    sid = await live_call(tw)
    tw.rest.calls[sid].status = "completed"  # ended at Twilio, our row not updated yet
    response = await tw.http.post(f"/api/calls/{sid}/transfer", headers=tw.admin_headers(), json={"target": "billing"})
    assert response.status_code == 409
    call = await get_call(tw.db, sid)
    assert call is not None
    assert (call.outcome, call.transfer_target, call.transfer_status) == (None, None, "failed")
