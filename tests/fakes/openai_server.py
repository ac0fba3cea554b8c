"""A local OpenAI-compatible chat-completions server for tests (real HTTP on 127.0.0.1).

It answers ``POST /v1/chat/completions`` with ``stream: true`` the way OpenAI does: SSE
``data: {chat.completion.chunk}`` lines (role first, content deltas, tool-call deltas
with index/id/name and argument pieces, a finish_reason chunk, a usage chunk when
``stream_options.include_usage``) and ``data: [DONE]``. Replies are scripted per request
(``ScriptedReply``); every request body is kept in ``requests`` for assertions.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScriptedReply:
    """One completion: text (streamed in ``pieces``) and/or tool calls (name, args).

    ``hold_after`` > 0 stops streaming after that many text pieces until ``release`` is set
    (to cancel a run mid-reply)."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    hold_after: int = 0
    release: asyncio.Event | None = None


Script = Callable[[dict[str, Any]], ScriptedReply] | list[ScriptedReply]


class FakeOpenAIServer:
    def __init__(self, script: Script) -> None:
        self._script = script
        self.requests: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None
        self.port = 0
        self.streamed_pieces = 0
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAIServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    def _next(self, body: dict[str, Any]) -> ScriptedReply:
        if callable(self._script):
            return self._script(body)
        if not self._script:
            raise AssertionError("fake OpenAI server: no scripted reply left")
        return self._script.pop(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                method, path, _ = request_line.decode().split(" ", 2)
                if method != "POST" or not path.endswith("/chat/completions"):
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                payload = json.loads(body)
                self.requests.append(payload)
                await self._stream(writer, payload, self._next(payload))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, body: dict[str, Any], reply: ScriptedReply) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        cid = f"chatcmpl-{uuid.uuid4().hex[:20]}"
        created = int(time.time())

        async def send(
            delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, int] | None = None
        ) -> None:
            chunk: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model", "fake"),
                "system_fingerprint": "fp_fake",
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if usage is not None:
                chunk["usage"] = usage
            await self._write(writer, f"data: {json.dumps(chunk)}\n\n")

        await send({"role": "assistant", "content": ""})
        pieces = [p + " " for p in reply.text.split(" ")] if reply.text else []
        if pieces:
            pieces[-1] = pieces[-1].rstrip(" ")
        for i, piece in enumerate(pieces):
            if reply.hold_after and i == reply.hold_after and reply.release is not None:
                await reply.release.wait()
            await send({"content": piece})
            self.streamed_pieces += 1
        for index, (name, args) in enumerate(reply.tool_calls):
            text = json.dumps(args)
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            await send(
                {
                    "tool_calls": [
                        {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                    ]
                }
            )
            for k in range(0, len(text), 7):
                await send({"tool_calls": [{"index": index, "function": {"arguments": text[k : k + 7]}}]})
        await send({}, finish="tool_calls" if reply.tool_calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(
                None,
                usage={"prompt_tokens": 50, "completion_tokens": len(pieces) + 5, "total_tokens": 55 + len(pieces)},
            )
        await self._write(writer, "data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, text: str) -> None:
        data = text.encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
