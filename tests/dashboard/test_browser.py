"""The console in a real headless Chromium against a real server (uvicorn on 127.0.0.1):
log in, look around, log out; an unauthenticated page redirects and the API wants its token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.dashboard.browser import chromium, need_browser
from tests.fakes.sim_server import live_server

pytestmark = pytest.mark.slow


async def log_in(browser, url: str, token: str = "dev-admin-token") -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    await browser.get(f"{url}/dashboard/flows")
    assert "/dashboard/login" in await browser.do(lambda d: d.current_url)

    def submit(d):  # type: ignore[no-untyped-def]
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.CSS_SELECTOR, ".login button[type=submit]").click()

    await browser.do(submit)


async def test_log_in_see_flows_log_out(tmp_path: Path) -> None:
    need_browser()
    from selenium.webdriver.common.by import By

    async with live_server(tmp_path) as server:
        with chromium() as browser:
            # a wrong token stays on the form, with a message and no session
            await log_in(browser, server.url, token="not-the-token")
            await browser.wait_for(".login .error")
            assert "not right" in await browser.text(".login .error")
            await browser.screenshot("login-refused")

            await log_in(browser, server.url)
            await browser.wait_for("header.top")
            assert (await browser.do(lambda d: d.current_url)).endswith("/dashboard/flows")
            await browser.wait_for("svg.flow-graph", at_least=3)
            assert "sales" in await browser.text("main h2")  # flows in name order
            cookie = await browser.do(lambda d: d.get_cookie("dialgraph_session"))
            assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert "token" not in await browser.do(lambda d: d.current_url)
            await browser.screenshot("flows")

            await browser.do(lambda d: d.find_element(By.CSS_SELECTOR, ".logout button").click())
            await browser.wait_for(".login form")
            assert "/dashboard/login" in await browser.do(lambda d: d.current_url)
            assert await browser.do(lambda d: d.get_cookie("dialgraph_session")) is None
            await browser.get(f"{server.url}/dashboard/campaigns")
            assert "/dashboard/login?next=%2Fdashboard%2Fcampaigns" in await browser.do(lambda d: d.current_url)

        async with httpx.AsyncClient(base_url=server.url) as client:
            page = await client.get("/dashboard/live")
            assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
            assert (await client.get("/api/calls/CA0")).status_code == 401


async def test_watch_a_live_call_then_find_it_in_the_history(tmp_path: Path) -> None:
    """The simulator holds a real call; the console shows its transcript growing live,
    then lists it, and its page has the transcript, the latency waterfall, the cost and
    the path through the flow."""
    need_browser()
    import asyncio

    from selenium.webdriver.common.by import By

    from dialgraph.telephony.simulator.cli import simulate
    from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer

    async with live_server(tmp_path) as server:
        with chromium() as browser:
            await log_in(browser, server.url)
            await browser.wait_for("header.top")
            call = asyncio.create_task(
                simulate(
                    "scheduling_demo",
                    url=server.url,
                    admin_token="dev-admin-token",
                    out_dir=tmp_path / "out",
                    synthesizer=TextSynthesizer(),
                    recognizer=TextRecognizer(),
                    database_url=server.database_url,
                )
            )
            for _ in range(100):  # the live page lists the call once Twilio's webhook came
                await browser.get(f"{server.url}/dashboard/live")
                if await browser.count("section.live-call"):
                    break
                await asyncio.sleep(0.2)
            first = await browser.wait_for("section.live-call ol.transcript li", timeout=20)
            grown = await browser.wait_for("section.live-call ol.transcript li", timeout=30, at_least=first + 2)
            assert grown > first, "the live transcript did not grow"
            assert "+1555" not in await browser.text("section.live-call h2") or "*" in await browser.text(
                "section.live-call h2"
            )
            await browser.screenshot("live-call")
            result = await call
            assert result.ok, (result.checks, result.failures)
            # the post-call analysis runs after the final status callback: the API shows it
            async with httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": "Bearer dev-admin-token"}
            ) as api:
                for _ in range(100):
                    shown = (await api.get(f"/api/calls/{result.call_sid}")).json()
                    if shown["analysis"] is not None:
                        break
                    await asyncio.sleep(0.1)
            assert shown["analysis"]["fields"]["outcome"] in ("booked", "moved"), shown["analysis"]
            assert shown["cost"]["total"] > 0 and shown["usage"]["stream_s"] > 0

            await browser.get(f"{server.url}/dashboard/calls")
            await browser.wait_for(f"a[href='/dashboard/calls/{result.call_sid}']")
            assert "1 call(s)" in await browser.text("main")
            await browser.screenshot("history")
            await browser.do(
                lambda d: d.find_element(By.CSS_SELECTOR, f"a[href='/dashboard/calls/{result.call_sid}']").click()
            )
            await browser.wait_for("ol.transcript.stored li.caller", at_least=3)
            page = await browser.text("main")
            assert "book a cleaning" in page.lower()
            assert await browser.count(".waterfall li .seg") >= 3
            assert await browser.count("table.cost") == 1 and "Total" in await browser.text("table.cost")
            assert await browser.count("svg.flow-graph g.node.visited") >= 3
            assert "book_appointment" in page
            assert shown["analysis"]["summary"] in page
            await browser.screenshot("call-detail")

            # the history filters: a flow that had no call shows none
            await browser.get(f"{server.url}/dashboard/calls?flow=sales")
            assert "0 call(s)" in await browser.text("main")
            await browser.get(f"{server.url}/dashboard/calls?outcome=nonsense")
            assert "outcome" in await browser.text(".error")
