"""Checkpoints at rest: redacted (messages, tool calls, tool results, keypad digits, every
string of the state), encrypted with the checkpoint key when one is set, on SQLite and
PostgreSQL, through the savers the app builds (``graphs.checkpoint.checkpointer``).

The graph here is the smallest one that does what a flow does with a number: a node that
sees the caller's words, calls a tool with the number in its arguments and gets a result
that repeats it. It records what it saw, so a test can tell the running turn (raw, in
memory) from the next one (loaded from the saver: redacted).
"""

from __future__ import annotations

import base64
import itertools
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, Any, TypedDict

import pytest
import structlog.testing
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from pydantic import SecretStr

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.graphs.checkpoint_serde import MessageMemoSerializer, serializer, serializer_for
from dialgraph.graphs.runner import GraphRunner
from dialgraph.server.core.checkpoint_keys import CheckpointKeyError, key_id
from dialgraph.server.core.redaction import default_redactor
from dialgraph.server.core.settings import DEV_SECRETS, Settings
from tests.fakes.db_dump import dump_database, leaks
from tests.fakes.graph_calls import Call as GraphCall

CARD = "4111111111111111"  # Luhn-valid
AADHAAR = "234567890124"  # Verhoeff-valid
SECRETS = (CARD, AADHAAR)
MARKER = "periwinkle umbrella"  # plaintext that only encryption hides


class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    keypad: str | None
    note: str | None


def build(saver: BaseCheckpointSaver[Any], seen: list[dict[str, Any]]) -> CompiledStateGraph[Any]:
    def agent(state: State) -> dict[str, Any]:
        seen.append(
            {
                "texts": [str(m.content) for m in state["messages"]],
                "keypad": state.get("keypad"),
                "note": state.get("note"),
            }
        )
        last = state["messages"][-1]
        turn = len(seen)
        if last.additional_kwargs.get("dtmf"):  # a keypad turn: acted on, not repeated
            return {"messages": [AIMessage("Noted.", id=f"ai-{turn}")], "keypad": None}
        return {
            "messages": [
                AIMessage(
                    f"Looking up {last.content}",
                    id=f"ai-{turn}",
                    tool_calls=[{"name": "lookup", "args": {"query": str(last.content)}, "id": f"call-{turn}"}],
                ),
                ToolMessage(f"found the account of {last.content}", tool_call_id=f"call-{turn}", id=f"tool-{turn}"),
                AIMessage(f"All done, {MARKER}.", id=f"done-{turn}"),
            ],
            "keypad": None,
        }

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_edge(START, "agent")
    graph.add_edge("agent", END)
    return graph.compile(checkpointer=saver)


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


def config(thread: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread}}


async def stored_texts(database_url: str) -> list[tuple[str, str, str]]:
    return [row for row in await dump_database(database_url) if row[0].startswith(("checkpoint", "writes"))]


async def test_the_running_turn_sees_the_number_the_next_turn_and_the_database_do_not(
    database_url: str, stack: AsyncExitStack
) -> None:
    saver = await checkpointer(database_url, stack=stack)
    seen: list[dict[str, Any]] = []
    graph = build(saver, seen)
    said = "my card is 4111 1111 1111 1111 and my Aadhaar is two three four five six seven eight nine zero one two four"
    await graph.ainvoke(
        {"messages": [HumanMessage(said, id="h1")], "keypad": CARD, "note": f"card {CARD}"}, config("t1")
    )
    assert seen[0]["texts"] == [said]  # the turn the number was said in: raw
    assert (seen[0]["keypad"], seen[0]["note"]) == (CARD, f"card {CARD}")

    rows = await stored_texts(database_url)
    assert rows, "the checkpoint tables hold the thread"
    leaked = [(t, c) for t, c, text in rows if leaks(text, SECRETS)]
    assert leaked == []
    everything = " ".join(text for _, _, text in rows)
    assert "[card ending 1111]" in everything and "[Aadhaar ending 0124]" in everything
    assert MARKER in everything  # not encrypted: redaction only

    await graph.ainvoke({"messages": [HumanMessage("thanks", id="h2")]}, config("t1"))
    history = seen[1]["texts"]
    assert history[0] == "my card is [card ending 1111] and my Aadhaar is [Aadhaar ending 0124]"
    assert history[1].startswith("Looking up my card is [card ending 1111]")
    assert history[2].startswith("found the account of my card is [card ending 1111]")
    state = await graph.aget_state(config("t1"))
    ai = state.values["messages"][1]
    assert isinstance(ai, AIMessage) and "[card ending 1111]" in ai.tool_calls[0]["args"]["query"]
    assert state.values["note"] == "card [card ending 1111]"
    assert [t for t, c, text in await stored_texts(database_url) if leaks(text, SECRETS)] == []


async def test_keypad_digits_are_never_stored_raw(database_url: str, stack: AsyncExitStack) -> None:
    saver = await checkpointer(database_url, stack=stack)
    seen: list[dict[str, Any]] = []
    graph = build(saver, seen)
    await graph.ainvoke({"messages": [HumanMessage("I want billing", id="s")]}, config("k"))
    typed = "4111111111111111"
    for i, key in enumerate(typed):  # one turn per key, as the runner makes them
        human = HumanMessage(f"(pressed {key} on the keypad)", id=f"k{i}", additional_kwargs={"dtmf": key})
        await graph.ainvoke({"messages": [human], "keypad": key}, config("k"))
        assert seen[-1]["keypad"] == key  # the running turn has the key (the keypad node routes on it)
    state = await graph.aget_state(config("k"))
    keypad_turns = [m for m in state.values["messages"] if isinstance(m, HumanMessage) and m.additional_kwargs]
    assert [m.additional_kwargs["dtmf"] for m in keypad_turns] == ["x"] * 16
    assert {m.content for m in keypad_turns} == {"(pressed x on the keypad)"}
    stored = " ".join(text for _, _, text in await stored_texts(database_url))
    assert "(pressed x on the keypad)" in stored
    assert [k for k in "0123456789" if f"pressed {k}" in stored] == []


async def test_encrypted_at_rest_and_a_wrong_key_fails_clearly(database_url: str, stack: AsyncExitStack) -> None:
    key = secrets.token_bytes(32)
    serde = serializer(redactor=default_redactor(), keys=[key])
    saver = await checkpointer(database_url, stack=stack, serde=serde)
    seen: list[dict[str, Any]] = []
    graph = build(saver, seen)
    said = f"my card is {CARD}, {MARKER}"
    await graph.ainvoke({"messages": [HumanMessage(said, id="h1")], "note": MARKER}, config("e"))
    await graph.ainvoke({"messages": [HumanMessage("thanks", id="h2")]}, config("e"))
    assert seen[1]["note"] == MARKER and seen[1]["texts"][0] == f"my card is [card ending 1111], {MARKER}"

    rows = await stored_texts(database_url)
    assert rows
    assert [(t, c) for t, c, text in rows if MARKER in text or "card ending" in text] == []
    assert [(t, c) for t, c, text in rows if leaks(text, SECRETS)] == []
    types = {text for t, c, text in rows if c == "type"}
    assert f"msgpack+aesgcm-{key_id(key)}" in types

    for wrong in ([secrets.token_bytes(32)], []):  # another key, or none at all
        other = await checkpointer(database_url, stack=stack, serde=serializer(redactor=default_redactor(), keys=wrong))
        with pytest.raises(CheckpointKeyError, match="DIALGRAPH_CHECKPOINT_KEY"):
            await build(other, []).aget_state(config("e"))


async def test_rotation_reads_with_old_keys_and_writes_with_the_new_one(
    database_url: str, stack: AsyncExitStack
) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(16)
    first = await checkpointer(database_url, stack=stack, serde=serializer(keys=[old]))
    await build(first, []).ainvoke({"messages": [HumanMessage(MARKER, id="h1")]}, config("r"))

    rotated = await checkpointer(database_url, stack=stack, serde=serializer(keys=[new, old]))
    seen: list[dict[str, Any]] = []
    await build(rotated, seen).ainvoke({"messages": [HumanMessage("again", id="h2")]}, config("r"))
    assert seen[0]["texts"][0] == MARKER  # the old key's checkpoint read
    types = {text for _, c, text in await stored_texts(database_url) if c == "type"}
    assert {f"msgpack+aesgcm-{key_id(old)}", f"msgpack+aesgcm-{key_id(new)}"} <= types

    dropped = await checkpointer(database_url, stack=stack, serde=serializer(keys=[new]))
    with pytest.raises(CheckpointKeyError, match=key_id(old)):  # the key it needs, by name
        async for _ in build(dropped, []).aget_state_history(config("r")):  # the old key wrote the first turn
            pass


async def test_encryption_switched_on_later_reads_the_clear_checkpoints(
    database_url: str, stack: AsyncExitStack
) -> None:
    plain = await checkpointer(database_url, stack=stack)
    await build(plain, []).ainvoke({"messages": [HumanMessage("hello", id="h1")], "note": "kept"}, config("o"))
    key = secrets.token_bytes(32)
    encrypted = await checkpointer(database_url, stack=stack, serde=serializer(keys=[key]))
    seen: list[dict[str, Any]] = []
    graph = build(encrypted, seen)
    await graph.ainvoke({"messages": [HumanMessage("again", id="h2")]}, config("o"))
    assert seen[0]["texts"][0] == "hello" and seen[0]["note"] == "kept"
    await graph.ainvoke({"messages": [HumanMessage("once more", id="h3")]}, config("o"))
    assert seen[1]["note"] == "kept"  # an unchanged string channel survives the switch


def test_settings_choose_the_serializer(tmp_path: Any) -> None:
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    plain = serializer_for(Settings(data_dir=tmp_path, _env_file=None))  # type: ignore[call-arg]
    assert isinstance(plain, MessageMemoSerializer) and plain.redactor is not None
    on = serializer_for(Settings(data_dir=tmp_path, checkpoint_key=SecretStr(key), _env_file=None))  # type: ignore[call-arg]
    assert isinstance(on, EncryptedSerializer) and isinstance(on.serde, MessageMemoSerializer)
    with pytest.raises(ValueError, match="checkpoint key must be 16, 24 or 32 bytes"):
        Settings(data_dir=tmp_path, checkpoint_key=SecretStr("too short"), _env_file=None)  # type: ignore[call-arg]


def test_settings_read_the_key_from_the_environment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    new, old = secrets.token_bytes(32), secrets.token_bytes(32)
    monkeypatch.setenv("DIALGRAPH_CHECKPOINT_KEY", new.hex())
    monkeypatch.setenv("DIALGRAPH_CHECKPOINT_OLD_KEYS", base64.b64encode(old).decode())
    settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert settings.checkpoint_keys == [new, old]
    assert new.hex() not in repr(settings)


async def test_the_encrypting_savers_pass_langgraphs_conformance_suite(database_url: str, tmp_path: Any) -> None:
    """Encryption moves PostgreSQL's inline strings to blobs: the official suite still passes."""
    keys = [secrets.token_bytes(32)]
    counter = itertools.count()
    sqlite = database_url.startswith("sqlite")

    @checkpointer_test(name="encrypted")
    async def factory() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        url = f"sqlite+aiosqlite:///{tmp_path / f'cp{next(counter)}.db'}" if sqlite else database_url
        async with AsyncExitStack() as s:
            saver = await checkpointer(url, stack=s, serde=serializer(redactor=default_redactor(), keys=keys))
            assert isinstance(saver.serde, EncryptedSerializer)
            if isinstance(saver, AsyncPostgresSaver):  # one database for the run: start each suite empty
                async with saver._cursor() as cur:
                    await cur.execute("TRUNCATE checkpoints, checkpoint_blobs, checkpoint_writes")
            yield saver

    report = await validate(factory)
    assert report.passed_all_base(), report
    assert report.passed_all(), report


async def test_a_keypad_key_is_acted_on_in_its_run_and_never_stored(
    runners: dict[str, GraphRunner], flow_settings: Settings, database_url: str
) -> None:
    call = GraphCall.open(runners["scheduling"], flow_settings, "scheduling", thread_id="keys-1")
    await call.start()
    reply = await call.press("0")  # dtmf_transfer: 0 -> front desk
    assert reply.transfer is not None and reply.transfer.target == "front_desk"
    state = await runners["scheduling"].graph.aget_state(config("keys-1"))
    keypad = [m for m in state.values["messages"] if m.additional_kwargs.get("dtmf")]
    assert [m.additional_kwargs["dtmf"] for m in keypad] == ["x"]
    stored = " ".join(
        t for table, _, t in await dump_database(database_url) if table.startswith(("checkpoint", "writes"))
    )
    assert "(pressed x on the keypad)" in stored and "(pressed 0 on the keypad)" not in stored


async def test_a_heard_text_repair_works_on_a_redacted_history(
    runners: dict[str, GraphRunner], flow_settings: Settings, database_url: str
) -> None:
    runner = runners["support"]
    call = GraphCall.open(runner, flow_settings, "support", thread_id="heard-1")
    await call.start()
    await call.say("I would like to leave a message")
    reply = await call.say("Please refund card 4111 1111 1111 1111 today")
    assert reply.text
    before = await runner.graph.aget_state(config("heard-1"))
    humans = [m.content for m in before.values["messages"] if m.type == "human"]
    assert humans[-1] == "Please refund card [card ending 1111] today"  # the next turn sees it redacted
    heard = reply.text[: max(1, len(reply.text) // 2)]
    await runner.record_heard(call.ctx, heard)
    after = await runner.graph.aget_state(config("heard-1"))
    last = after.values["messages"][-1]
    assert last.type == "ai" and last.additional_kwargs.get("interrupted") is True
    assert " ".join(heard.split()) in str(last.content) or str(last.content) == " ".join(heard.split())
    again = await call.say("Thanks, that is all")
    assert again.text or again.end is not None
    rows = await dump_database(database_url)
    assert [(t, c) for t, c, text in rows if leaks(text, [CARD])] == []


def test_production_without_a_key_starts_but_says_so(tmp_path: Any) -> None:
    secrets_ = {name: SecretStr(secrets.token_urlsafe(24)) for name in DEV_SECRETS}
    production = Settings(  # type: ignore[call-arg]
        env="production", public_url="https://voice.example.com", data_dir=tmp_path, _env_file=None, **secrets_
    )
    with structlog.testing.capture_logs() as logs:
        serde = serializer_for(production)
    assert isinstance(serde, MessageMemoSerializer)  # redacted, not encrypted
    assert [e["log_level"] for e in logs if "encryption is OFF" in e["event"]] == ["warning"]
    keyed = production.model_copy(update={"checkpoint_key": SecretStr(secrets.token_urlsafe(32))})
    with structlog.testing.capture_logs() as logs:
        assert isinstance(serializer_for(keyed), EncryptedSerializer)
    assert logs == []
