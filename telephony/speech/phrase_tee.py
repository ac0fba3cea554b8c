"""One phrase stream read by one provider after another (a fallback chain's TTS input)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from dialgraph.telephony.speech.tasks import cancel_and_wait


class PhraseTee:
    """Lets several readers (one provider after another) read one phrase stream from any
    index. Pulls from the source run in their own task, so cancelling a reader (a provider
    being torn down) never cancels, and so never breaks, the source."""

    def __init__(self, source: AsyncIterable[str]) -> None:
        self._it = source.__aiter__()
        self.items: list[str] = []
        self.pulled_at: list[float] = []
        self.done = False
        self.error: BaseException | None = None
        self._pull_task: asyncio.Task[Any] | None = None

    async def reader(self, start: int) -> AsyncIterator[str]:
        i = start
        while True:
            if i < len(self.items):
                yield self.items[i]
                i += 1
                continue
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            if self._pull_task is None:
                self._pull_task = asyncio.get_running_loop().create_task(self._pull())
            await asyncio.shield(self._pull_task)

    async def _pull(self) -> None:
        try:
            phrase = await self._it.__anext__()
            if phrase.strip():
                self.items.append(phrase)
                self.pulled_at.append(time.monotonic())
        except StopAsyncIteration:
            self.done = True
        except Exception as exc:
            self.done, self.error = True, exc
        finally:
            self._pull_task = None

    async def aclose(self) -> None:
        if self._pull_task is not None:
            await cancel_and_wait(self._pull_task)
