"""The live hub: per-call fan-out, bounded drop-oldest queues, listeners that cannot break
the publisher (the session publishes from its recognition loop)."""

from __future__ import annotations

import asyncio
import time

from dialgraph.server.core.live import CallerSpeech, LiveEvent, LiveHub


async def test_subscribers_get_their_calls_events_and_slow_ones_lose_the_oldest() -> None:
    hub = LiveHub()
    with hub.subscribe("CA1", maxlen=3) as one, hub.subscribe(None) as every, hub.subscribe("CA2") as two:
        assert hub.subscribers == 3
        for i in range(5):
            hub.caller_speech("CA1", f"word {i}", final=i == 4)
        hub.caller_speech("CA2", "other", final=False)
        hub.caller_speech("CA1", "", final=False)  # nothing heard: nothing published
        got = await one.wait(1.0)
        assert [e.text for e in got if isinstance(e, CallerSpeech)] == ["word 2", "word 3", "word 4"]
        assert one.dropped == 2 and isinstance(got[-1], CallerSpeech) and got[-1].final
        assert len(every.drain()) == 6
        assert [e.call_sid for e in await two.wait(1.0)] == ["CA2"]
        started = time.monotonic()
        assert await one.wait(0.05) == []  # nothing more: returns after the wait
        assert time.monotonic() - started >= 0.04
        # A wait in progress wakes up when something is published.
        waiting = asyncio.create_task(one.wait(5.0))
        await asyncio.sleep(0.01)
        hub.caller_speech("CA1", "late", final=True)
        assert [e.call_sid for e in await asyncio.wait_for(waiting, 1.0)] == ["CA1"]
    assert hub.subscribers == 0


async def test_a_failing_listener_is_removed_and_never_reaches_the_publisher() -> None:
    hub = LiveHub()
    seen: list[LiveEvent] = []

    def broken(event: LiveEvent) -> None:
        raise RuntimeError("boom")

    hub.add_listener(broken)
    hub.add_listener(seen.append)
    hub.caller_speech("CA1", "hello", final=True)  # does not raise
    hub.caller_speech("CA1", "again", final=True)
    assert [e.text for e in seen if isinstance(e, CallerSpeech)] == ["hello", "again"]
    hub.remove_listener(seen.append)
    hub.caller_speech("CA1", "unheard", final=True)
    assert len(seen) == 2
