"""One campaign, three real ``dialgraph serve`` processes on one PostgreSQL, one of them killed.

The instances share only the database (and the stream-token secret); each has its own public
URL, so Twilio's callbacks for a call go to the instance that placed it. The simulator's
Twilio REST API (in this test's event loop) plays 200 callees: humans who answer and hang up
after a second or two, busy lines, no answers, voicemail boxes that beep. Instance B is
SIGKILLed mid-campaign, the instant its REST request for a call reached Twilio (before it
could record that call), with other calls of its own under way: their callbacks land
nowhere, its claims are never dialled. A and C must finish the campaign: B's expired claims go back to the
queue, its calls are reconciled by fetching them from the REST API.

Checked at the fake, where the calls really happen: every contact dialled exactly once, never
more than ``max_concurrent`` calls live at once across the instances, never more than
``calls_per_second`` call creations (+1, see ``RATE_SLACK``) in any one-second window; and in
the server's counts, every outcome where the callee's kind says it must be.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.server.core.db import Database
from dialgraph.telephony.simulator.outbound_call import FINAL_STATUSES, OutboundCall
from dialgraph.telephony.simulator.process import ServerProcess, server_env
from dialgraph.telephony.simulator.scenario import Callee
from dialgraph.telephony.simulator.twilio_api import TwilioApi
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ADMIN = {"Authorization": "Bearer dev-admin-token"}
CALLER_ID = "+15550003000"
CONTACTS = 200
MAX_CONCURRENT = 10
CALLS_PER_SECOND = 10.0
KILL_AFTER_CALLS = 60  # B dies at its first call created after this many
CAMPAIGN_TIMEOUT_S = 180
# The campaign's slots are 1/cps apart exactly (claimed under the campaign row's lock); the
# REST request for a slot goes out a few ms after it (a claim check, the compliance reads,
# the account's rate slot, the HTTP round trip). A late request can share a one-second window
# at the fake with the ten slots after it: 11 creations in a window, never 12 while the
# lateness stays under one interval (100 ms).
RATE_SLACK = 1
KINDS = ["human"] * 12 + ["busy"] * 3 + ["no-answer"] * 3 + ["voicemail"] * 2  # of every 20 contacts


def callees() -> dict[str, Callee]:
    """200 numbers, each with its callee: 60% humans, 15% busy, 15% no answer, 10% voicemail."""
    kinds = [KINDS[i % len(KINDS)] for i in range(CONTACTS)]
    random.Random(12).shuffle(kinds)
    out: dict[str, Callee] = {}
    for i, kind in enumerate(kinds):
        number = f"+1555800{i:04d}"
        if kind == "human":
            out[number] = Callee(kind="human", ring_s=0.2, hangup_after_s=1.0 + (i % 3) * 0.5)
        elif kind == "busy":
            out[number] = Callee(kind="busy", ring_s=0.1)
        elif kind == "no-answer":
            out[number] = Callee(kind="no-answer", ring_s=0.5)
        else:
            out[number] = Callee(kind="voicemail", ring_s=0.2, beep_after_s=0.5, hangup_after_s=30)
    return out


# The contact's outcome by the callee's kind: a call of a surviving instance gets its
# callbacks; a call of the killed one is finished from a REST fetch, so a human (or a machine
# whose message B never got to leave, or whose beep had not come yet) may end completed, and
# a call whose answer URL was refused (B already dead) as Twilio ends it: completed.
SURVIVOR_OUTCOME = {"human": {"completed"}, "busy": {"busy"}, "no-answer": {"no_answer"}, "voicemail": {"voicemail"}}
KILLED_OUTCOME = {
    "human": {"completed", "failed"},
    "busy": {"busy"},
    "no-answer": {"no_answer"},
    "voicemail": {"voicemail", "completed", "failed"},
}


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most creations in any half-open window [t, t + window_s)."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] - start < window_s:
            j += 1
        best = max(best, j - i)
    return best


def placed_by(call: OutboundCall, procs: dict[str, ServerProcess]) -> str:
    """The instance that placed ``call``: its answer URL is that instance's public URL."""
    return next(name for name, proc in procs.items() if (call.url or "").startswith(proc.url + "/"))


async def contacts_of(http: httpx.AsyncClient, campaign_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = (await http.get(f"/api/campaigns/{campaign_id}/contacts", params={"after": after, "limit": 100})).json()
        out += page["contacts"]
        after = page["next_after"]
    return out


async def test_three_instances_finish_a_campaign_when_one_is_killed(tmp_path: Path, pg_dsn: str) -> None:
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    db = Database(url)
    await db.upgrade()  # once, before three instances race to migrate
    await db.aclose()
    async with AsyncExitStack() as stack:
        await checkpointer(url, stack=stack, pool_size=1)  # creates the checkpoint tables
    people = callees()
    async with (
        TwilioApi(callees=people) as api,
        DeepgramFake(["hello"]) as deepgram,
        ElevenLabsFake() as elevenlabs,
    ):
        outbound = {
            "window": {"start": "00:00", "end": "24:00"},
            "default_from": CALLER_ID,
            "account_calls_per_second": 50,
            "dispatch_interval_s": 0.1,
            "claim_ttl_s": 5,
            "stale_call_s": 5,
        }
        env = server_env(
            os.environ,
            DATABASE_URL=url,
            DIALGRAPH_DATA_DIR=str(tmp_path),
            DIALGRAPH_MODEL="offline",
            DIALGRAPH_LOG_LEVEL="INFO",
            DIALGRAPH_STREAM_TOKEN_SECRET="stream-secret-shared-by-instances",
            DIALGRAPH_OUTBOUND=json.dumps(outbound),
            DIALGRAPH_LIMITS=json.dumps({"callee_attempts_per_day": 0}),
            **api.env(),
            **deepgram.env(),
            **elevenlabs.env(),
        )
        procs = {name: ServerProcess(name, env, tmp_path) for name in ("a", "b", "c")}
        for proc in procs.values():
            proc.env["DIALGRAPH_PUBLIC_URL"] = proc.url  # Twilio calls back the instance that placed the call
        try:
            await asyncio.gather(*(proc.start() for proc in procs.values()))
            await run_campaign(api, procs, people)
        finally:
            await asyncio.gather(*(proc.aclose() for proc in procs.values()))


async def run_campaign(api: TwilioApi, procs: dict[str, ServerProcess], people: dict[str, Callee]) -> None:
    a, b = procs["a"], procs["b"]

    def logs() -> str:
        return "\n".join(f"--- {name}\n{proc.log_tail(15)}" for name, proc in procs.items())

    async with httpx.AsyncClient(base_url=a.url, headers=ADMIN, timeout=30, trust_env=False) as http:
        body = {
            "name": "three instances",
            "flow": "sales",
            "contacts": [{"to": number, "context": {"name": f"Contact {i}"}} for i, number in enumerate(people)],
            "max_concurrent": MAX_CONCURRENT,
            "calls_per_second": CALLS_PER_SECOND,
            "max_attempts": 1,
        }
        started = time.monotonic()
        created = await http.post("/api/campaigns", json=body)
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]

        # --- B dies mid-campaign, with at least one call of its own under way --------------
        def b_live() -> list[OutboundCall]:
            return [c for c in api.calls.values() if placed_by(c, procs) == "b" and c.status not in FINAL_STATUSES]

        async with asyncio.timeout(60):
            while len(api.created_at) < KILL_AFTER_CALLS:
                await asyncio.sleep(0.005)
            # The hardest instant: B's REST request just reached Twilio (the callee's phone
            # rings) and B has not recorded the call yet. Checked every loop turn, so the
            # SIGKILL goes out before B has even read Twilio's answer.
            seen = len(api.calls)
            while not any(placed_by(c, procs) == "b" for c in list(api.calls.values())[seen:]):
                await asyncio.sleep(0)
        await b.kill()
        killed_at = time.monotonic()
        created_before_kill = len(api.created_at)
        cut = b_live()

        # --- the others finish the campaign -------------------------------------------------
        state: dict[str, Any] = {}
        try:
            async with asyncio.timeout(CAMPAIGN_TIMEOUT_S):
                while (state := (await http.get(f"/api/campaigns/{campaign_id}")).json())["status"] != "completed":
                    await asyncio.sleep(0.25)
        except TimeoutError:
            pytest.fail(f"not completed in {CAMPAIGN_TIMEOUT_S} s: {state.get('counts')}\n{logs()}")
        finished = time.monotonic()
        await api.wait_idle(timeout_s=60)
        contacts = await contacts_of(http, campaign_id)

    # --- at the fake: each contact dialled once, the limits held across the instances -------
    by_number = {n: [c for c in api.calls.values() if c.to == n] for n in people}
    twice = {n: [placed_by(c, procs) for c in calls] for n, calls in by_number.items() if len(calls) != 1}
    assert not twice, f"dialled other than once: {twice}\n{logs()}"
    assert all(api.dials[n] == 1 for n in people) and sum(api.dials.values()) == CONTACTS
    assert api.max_live <= MAX_CONCURRENT, api.max_live
    peak_rate = max_in_window(api.created_at)
    assert peak_rate <= CALLS_PER_SECOND + RATE_SLACK, peak_rate
    placer = {n: placed_by(calls[0], procs) for n, calls in by_number.items()}
    per_instance = Counter(placer.values())
    assert set(per_instance) == {"a", "b", "c"}, per_instance  # all three dialled
    assert not [c for c in api.calls.values() if placer[c.to] == "b" and c.created_at > killed_at]
    # B's calls cut short really lost their callbacks (the dead instance's, to be reconciled).
    assert cut
    lost = [c for c in cut if any(cb.error for cb in c.callbacks)]
    assert lost, "no callback of B's cut calls failed: the kill did not bite"

    # --- in the server: every contact done once, its outcome where its callee says --------
    assert len(contacts) == CONTACTS
    open_ = [c for c in contacts if c["state"] != "done"]
    assert not open_, open_[:5]
    assert all(c["attempts"] == 1 for c in contacts), [c for c in contacts if c["attempts"] != 1][:5]
    kind = {n: callee.kind for n, callee in people.items()}
    wrong = [
        (c["to"], kind[c["to"]], placer[c["to"]], c["outcome"])
        for c in contacts
        if c["outcome"] not in (KILLED_OUTCOME if placer[c["to"]] == "b" else SURVIVOR_OUTCOME)[kind[c["to"]]]
    ]
    assert not wrong, wrong
    outcomes = Counter(c["outcome"] for c in contacts)
    counts = {k: v for k, v in state["counts"].items() if v}
    assert counts == dict(outcomes), (counts, outcomes)
    assert state["total"] == CONTACTS
    kinds = Counter(kind.values())
    assert outcomes["busy"] == kinds["busy"] and outcomes["no_answer"] == kinds["no-answer"]
    survivors_human = sum(1 for n, k in kind.items() if k == "human" and placer[n] != "b")
    survivors_vm = sum(1 for n, k in kind.items() if k == "voicemail" and placer[n] != "b")
    assert outcomes["completed"] >= survivors_human and outcomes["voicemail"] >= survivors_vm
    assert outcomes["completed"] + outcomes["voicemail"] + outcomes["failed"] == kinds["human"] + kinds["voicemail"]

    print(
        f"\ncampaign of {CONTACTS}: {finished - started:.1f} s (B killed at {killed_at - started:.1f} s after "
        f"{created_before_kill} calls, {len(cut)} of its calls under way; done {finished - killed_at:.1f} s later); "
        f"placed by a/b/c {per_instance['a']}/{per_instance['b']}/{per_instance['c']}; max_live {api.max_live} "
        f"(limit {MAX_CONCURRENT}); max creations in 1 s {peak_rate} (limit {CALLS_PER_SECOND:g}); "
        f"outcomes {dict(sorted(outcomes.items()))}"
    )
