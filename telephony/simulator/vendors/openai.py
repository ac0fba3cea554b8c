"""A local OpenAI-compatible chat-completions server (real HTTP on 127.0.0.1), for tests and
benchmarks: the real ``langchain-openai`` client runs unchanged against it.

It answers ``POST /v1/chat/completions`` with ``stream: true`` the way OpenAI does: SSE
``data: {chat.completion.chunk}`` lines (role first, content deltas, tool-call deltas
with index/id/name and argument pieces, a finish_reason chunk, a usage chunk when
``stream_options.include_usage``) and ``data: [DONE]``. Replies are scripted per request
(``ScriptedReply``); every request body is kept in ``requests`` for assertions.

Structured outputs (``response_format: {"type": "json_schema", "json_schema": {..., "strict":
true}}``): the schema is checked the way OpenAI documents for strict mode (every object lists
all its properties in ``required`` and sets ``additionalProperties: false``, through ``$defs``,
``anyOf`` and ``items``) and a violation answers 400 ``invalid_request_error`` with
``param: response_format``; the scripted text is the JSON content. A request without
``stream: true`` gets one ``chat.completion`` object instead of a stream.

Timing (``ModelTiming``): the default answers at once. ``HOSTED_MINI`` plays a hosted small
model as callers meet it: the first content ``ttft_ms`` after the request (350 ms, the
figure the turn-taking issue takes for a hosted mini model: published measurements of
gpt-4o-mini-class models put time to first token at 0.3-0.6 s), then pieces at
``tokens_per_s`` (one streamed piece, a word or a slice of tool arguments, counted as one
token; ~90 tokens/s for that class). A reply that only calls tools waits ``ttft_ms`` too.
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


@dataclass(frozen=True, slots=True)
class ModelTiming:
    """How fast the stand-in answers: time to the first piece, then pieces a second (0: at once)."""

    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0

    def gap_s(self) -> float:
        return 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0


HOSTED_MINI = ModelTiming(ttft_ms=350.0, tokens_per_s=90.0)


class FakeOpenAIServer:
    def __init__(self, script: Script, *, timing: ModelTiming | None = None) -> None:
        self._script = script
        self.timing = timing or ModelTiming()
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
                problem = strict_schema_problem(payload.get("response_format"))
                if problem is not None:
                    await self._error(writer, 400, problem, param="response_format")
                    continue
                if payload.get("stream"):
                    await self._stream(writer, payload, self._next(payload))
                else:
                    await self._complete(writer, payload, self._next(payload))
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

        timing, gap = self.timing, self.timing.gap_s()
        if timing.ttft_ms > 0:
            await asyncio.sleep(timing.ttft_ms / 1000)
        await send({"role": "assistant", "content": ""})
        pieces = [p + " " for p in reply.text.split(" ")] if reply.text else []
        if pieces:
            pieces[-1] = pieces[-1].rstrip(" ")
        for i, piece in enumerate(pieces):
            if reply.hold_after and i == reply.hold_after and reply.release is not None:
                await reply.release.wait()
            if gap and i:
                await asyncio.sleep(gap)
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
                if gap:
                    await asyncio.sleep(gap)
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
    async def _error(writer: asyncio.StreamWriter, status: int, message: str, *, param: str | None = None) -> None:
        """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
        data = json.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
        ).encode()
        reason = {400: "Bad Request"}.get(status, "Error")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _complete(self, writer: asyncio.StreamWriter, body: dict[str, Any], reply: ScriptedReply) -> None:
        """A non-streamed ``chat.completion`` (after the time the stream would have taken)."""
        pieces = len(reply.text.split()) + sum(len(json.dumps(a)) // 7 + 1 for _, a in reply.tool_calls)
        wait_s = self.timing.ttft_ms / 1000 + max(0, pieces - 1) * self.timing.gap_s()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for name, args in reply.tool_calls
            ]
        words = len(reply.text.split())
        data = json.dumps(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:20]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": words + 5, "total_tokens": 55 + words},
            }
        ).encode()
        writer.write(
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data
        )
        await writer.drain()

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, text: str) -> None:
        data = text.encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()


def strict_schema_problem(response_format: object) -> str | None:
    """Why OpenAI would refuse this strict ``json_schema`` response format (None: it would
    not). Strict mode: every object sets ``additionalProperties: false`` and lists every
    property in ``required`` (optional values are a union with ``null``)."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    name = spec.get("name", "")
    if not spec.get("strict"):
        return None
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        return f"Invalid schema for response_format '{name}': schema must be an object."
    defs = schema.get("$defs") or {}

    def check(node: object, where: str) -> str | None:
        if not isinstance(node, dict):
            return None
        if "$ref" in node:
            ref = str(node["$ref"]).rsplit("/", 1)[-1]
            return None if ref in defs else f"In context={where}, reference {node['$ref']} can't be resolved."
        props = node.get("properties")
        if node.get("type") == "object" or isinstance(props, dict):
            props = props if isinstance(props, dict) else {}
            if node.get("additionalProperties") is not False:
                return f"In context={where}, 'additionalProperties' is required to be supplied and to be false."
            missing = [k for k in props if k not in (node.get("required") or [])]
            if missing:
                return f"In context={where}, 'required' is required to be supplied and to be an array including every key in properties. Missing '{missing[0]}'."
            for key, sub in props.items():
                if (problem := check(sub, f"{where}, '{key}'")) is not None:
                    return problem
        for key in ("anyOf", "allOf"):
            for i, sub in enumerate(node.get(key) or []):
                if (problem := check(sub, f"{where}, {key}[{i}]")) is not None:
                    return problem
        if (problem := check(node.get("items"), f"{where}, items")) is not None:
            return problem
        return None

    for def_name, sub in defs.items():
        if (problem := check(sub, f"$defs, '{def_name}'")) is not None:
            return f"Invalid schema for response_format '{name}': {problem}"
    problem = check(schema, "()")
    return f"Invalid schema for response_format '{name}': {problem}" if problem is not None else None
