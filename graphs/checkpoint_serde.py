"""The checkpoint serializer: what a checkpoint stores of the conversation, and how.

``MessageMemoSerializer``: LangGraph's serializer that encodes a message object once
instead of at every step, and stores it redacted (``server/core/redaction.py``: what the
caller said, the tools' arguments and results, keypad digits; the running turn keeps the raw
values in memory). ``serializer_for(settings)`` wraps it in LangGraph's
``EncryptedSerializer`` when ``DIALGRAPH_CHECKPOINT_KEY`` is set (``KeyringCipher``: AES,
the key named in each value, old keys accepted for reading: rotation). The savers that use
it are in ``graphs/checkpoint.py``.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import secrets
import weakref
from collections.abc import Sequence
from typing import Any, cast

import ormsgpack
import structlog
from Crypto.Cipher import AES
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall
from langgraph.checkpoint.base import (
    SerializerProtocol,
)
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.serde.base import CipherProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from pydantic import BaseModel

from dialgraph.server.core.checkpoint_keys import CheckpointKeyError, key_id
from dialgraph.server.core.redaction import Redactor, redactor_for
from dialgraph.server.core.settings import Settings

log = structlog.get_logger(__name__)


class MessageMemoSerializer(jsonplus.JsonPlusSerializer):
    """``JsonPlusSerializer`` that encodes each message object once, to the same bytes, and
    (given a ``redactor``) stores what it encodes redacted.

    **The memo.** The ``messages`` channel changes at every step, so LangGraph serializes
    the whole history at every checkpoint (the SQLite saver even stores it in every
    checkpoint row): a tool round trip re-encodes it four or five times per turn, 11-14% of
    a turn's CPU at 20 turns of history (bench/graph_turns.py). Here a message's encoding
    is kept with the object (weakly: it lives as long as the message). Those read from the
    checkpoint at the start of a run are reused as read; one made later, by the next
    step's checkpoint. A kept encoding is used only while every field of the message is
    still the very object it was encoded from (LangGraph does set the id of a message
    written without one); messages in state are values, as LangGraph treats them, and are
    not changed in place below the top level. Without a redactor the output is byte for
    byte ``JsonPlusSerializer``'s; with one it is the bytes of the redacted values, which
    either serializer reads.

    **Redaction at rest** (``server/core/redaction.py``). What is stored is redacted: a
    message's content (text and content blocks), an AI message's tool-call arguments
    (``tool_calls``, ``invalid_tool_calls``, raw ``additional_kwargs``) and a tool
    message's content and artifact, once per message object (the memo keeps the redacted
    encoding); every other string of the state's channels; keypad digits, never stored:
    the ``keypad`` channel and a keypad turn of the history (``(pressed 4 on the keypad)``,
    one turn per key) are stored with an ``x`` per key. (A menu choice is acted on in the
    run it was pressed in, which holds the digit in memory; a number typed key by key is
    spread over turns, so no single turn can tell a choice from a digit of it.) The
    running graph keeps the raw objects in memory, so the model and the tools see the
    caller's digits for the turn they were said in; the next turn, loaded from the saver,
    sees the redacted text.

    Not redacted: checkpoint metadata and ids (LangGraph's own bookkeeping), and
    checkpoints written before redaction was on (read as they are; the thread keeps them
    until it is pruned).
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor
        self._memo: dict[int, tuple[weakref.ref[BaseMessage], tuple[Any, ...], ormsgpack.Ext]] = {}

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, Boxed):
            obj = self.redact_channel(obj.channel, obj.value)
        elif self.redactor is not None:
            obj = self._redact_top(obj)
        if obj is None or isinstance(obj, (bytes, bytearray)):
            return super().dumps_typed(obj)
        try:
            return "msgpack", ormsgpack.packb(obj, default=self._default, option=jsonplus._option)
        except ormsgpack.MsgpackEncodeError:
            return super().dumps_typed(obj)  # its pickle fallback, or its error

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, payload = data
        if "+" in type_:  # "msgpack+aesgcm-…": written encrypted
            raise CheckpointKeyError(
                "this checkpoint is encrypted: set DIALGRAPH_CHECKPOINT_KEY (or _OLD_KEYS) to the key it was written with"
            )
        if type_ != "msgpack":
            return super().loads_typed(data)
        inner = self._unpack_ext_hook

        def ext_hook(code: int, ext_data: bytes) -> Any:
            obj = inner(code, ext_data)
            if code == jsonplus.EXT_PYDANTIC_V2 and isinstance(obj, BaseMessage):
                self._keep(obj, ormsgpack.Ext(code, ext_data))
            return obj

        return ormsgpack.unpackb(payload, ext_hook=ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)

    def _default(self, obj: Any) -> Any:
        if isinstance(obj, BaseMessage):
            kept = self._memo.get(id(obj))
            if (
                kept is not None
                and kept[0]() is obj
                and not obj.__pydantic_extra__
                and all(map(operator.is_, kept[1], obj.__dict__.values()))
            ):
                return kept[2]
            stored = self._redact_message(obj) if self.redactor is not None else obj
            ext = jsonplus._msgpack_default(stored)
            if isinstance(ext, ormsgpack.Ext):
                self._keep(obj, ext)
            return ext
        return jsonplus._msgpack_default(obj)

    def _keep(self, message: BaseMessage, ext: ormsgpack.Ext) -> None:
        """Keep ``ext`` as ``message``'s encoding while it lives (not for a message carrying
        extra attributes: only its declared fields are watched)."""
        if message.__pydantic_extra__:
            return
        key, memo = id(message), self._memo

        def forget(ref: weakref.ref[BaseMessage]) -> None:
            kept = memo.get(key)
            if kept is not None and kept[0] is ref:
                del memo[key]

        memo[key] = (weakref.ref(message, forget), tuple(message.__dict__.values()), ext)

    # --- redaction ------------------------------------------------------------------------
    def redact_channel(self, channel: str, value: Any) -> Any:
        """``value`` of state channel ``channel`` as it may be stored (the same object when
        nothing changes)."""
        if self.redactor is None:
            return value
        if channel in _KEYPAD_KEYS and isinstance(value, str):
            return _mask_keys(value)
        return self._walk(value, channel)

    def _redact_top(self, obj: Any) -> Any:
        if isinstance(obj, dict) and "channel_values" in obj and "channel_versions" in obj:  # a whole checkpoint
            values = obj["channel_values"]
            stored = {k: self.redact_channel(k, v) for k, v in values.items()}
            if any(stored[k] is not v for k, v in values.items()):
                return {**obj, "channel_values": stored}
            return obj
        if isinstance(obj, str) and _DTMF.fullmatch(obj):  # a bare write of the keypad channel
            return _mask_keys(obj)
        return self._walk(obj, None)

    def _walk(self, value: Any, key: str | None) -> Any:
        """``value`` with its strings redacted, rebuilt only where something changed
        (messages are left to ``_default``, which redacts each once)."""
        redactor = self.redactor
        assert redactor is not None
        if isinstance(value, str):
            return _mask_keys(value) if key in _KEYPAD_KEYS else redactor.redact(value)
        if isinstance(value, dict):
            out = {k: self._walk(v, k if isinstance(k, str) else None) for k, v in value.items()}
            return out if any(out[k] is not v for k, v in value.items()) else value
        if isinstance(value, list | tuple):
            walked = [self._walk(v, None) for v in value]
            if all(map(operator.is_, walked, value)):
                return value
            if hasattr(value, "_fields"):  # a named tuple
                return type(value)(*walked)
            return type(value)(walked) if isinstance(value, tuple) else walked
        if isinstance(value, BaseMessage):
            return value  # ``_default`` redacts it, once
        fields = _fields_of(value)
        if fields:
            changed = {k: w for k, v in fields.items() if (w := self._walk(v, k)) is not v}
            if changed:
                try:
                    if isinstance(value, BaseModel):
                        return value.model_copy(update=changed)
                    return dataclasses.replace(value, **changed)
                except (TypeError, ValueError):  # a field it cannot be built with: stored as it is
                    return value
        return value

    def _redact_message(self, message: BaseMessage) -> BaseMessage:
        """``message`` as stored: its text, tool-call arguments and tool results redacted."""
        update: dict[str, Any] = {}
        for field in _MESSAGE_TEXT_FIELDS:
            value = getattr(message, field, None)
            if value:
                stored = self._walk(value, None)
                if stored is not value:
                    update[field] = stored
        if isinstance(message, AIMessage):
            calls = [self._redact_call(c) for c in message.tool_calls]
            if any(a is not b for a, b in zip(calls, message.tool_calls, strict=True)):
                update["tool_calls"] = calls
        keys = message.additional_kwargs.get("dtmf") if isinstance(message, HumanMessage) else None
        if isinstance(keys, str) and keys:  # a keypad turn (``GraphRunner.respond``): its keys masked
            masked = _mask_keys(keys)
            content = update.get("content", message.content)
            if isinstance(content, str):
                update["content"] = content.replace(keys, masked)
            update["additional_kwargs"] = {**update.get("additional_kwargs", message.additional_kwargs), "dtmf": masked}
        return message.model_copy(update=update) if update else message

    def _redact_call(self, call: ToolCall) -> ToolCall:
        args = self._walk(call["args"], None)
        return call if args is call["args"] else cast(ToolCall, {**call, "args": args})


# Message fields that hold what was said or done (besides an AI message's ``tool_calls``);
# ``response_metadata`` too: a model may keep its own notes there (the offline model's frame).
_MESSAGE_TEXT_FIELDS = (
    "content",
    "additional_kwargs",
    "response_metadata",
    "invalid_tool_calls",
    "tool_call_chunks",
    "artifact",
)


def _fields_of(value: Any) -> dict[str, Any] | None:
    """The fields of a dataclass instance or a pydantic model (a tool's artifact), else None."""
    if isinstance(value, BaseModel):
        return dict(value.__dict__)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
    return None


_KEYPAD_KEYS = frozenset({"keypad"})  # the channel, and the key of a run's input
_DTMF = re.compile(r"[0-9*#]{1,64}")


def _mask_keys(keys: str) -> str:
    """Keypad keys as stored: each key an ``x``."""
    return re.sub(r"[0-9*#]", "x", keys)


class Boxed:
    """A string channel value the PostgreSQL saver must store as a (serialized, so
    encrypted) blob instead of inline in its JSONB checkpoint; read back as the string."""

    __slots__ = ("channel", "value")

    def __init__(self, channel: str, value: str) -> None:
        self.channel, self.value = channel, value


def memo_serializer(serde: SerializerProtocol) -> MessageMemoSerializer | None:
    """The ``MessageMemoSerializer`` ``serde`` is or wraps (an ``EncryptedSerializer``'s)."""
    inner = serde.serde if isinstance(serde, EncryptedSerializer) else serde
    return inner if isinstance(inner, MessageMemoSerializer) else None


# --- encryption at rest ----------------------------------------------------------------------
class KeyringCipher(CipherProtocol):
    """AES-GCM under the newest of ``keys``; reads with any of them.

    A value is ``nonce (12) + tag (16) + ciphertext``, its cipher name (stored in the type
    column: ``msgpack+aesgcm-1a2b3c4d``) names the key by ``key_id``, so rotation is: a new
    ``DIALGRAPH_CHECKPOINT_KEY``, the old one moved to ``DIALGRAPH_CHECKPOINT_OLD_KEYS``,
    dropped once the checkpoints it wrote are pruned (``[retention] checkpoints_days``).
    Values written by LangGraph's own ``EncryptedSerializer.from_pycryptodome_aes`` (cipher
    ``aes``: EAX, ``LANGGRAPH_AES_KEY``) are read with whichever key authenticates them.
    GCM, not LangGraph's EAX: a third of the CPU per value in pycryptodome (~40 us against
    ~140 us), and a turn encrypts or decrypts dozens of values.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise CheckpointKeyError("no checkpoint key")
        self._current = keys[0]
        self._current_name = f"aesgcm-{key_id(keys[0])}"
        self._keys = {key_id(k): k for k in reversed(keys)}  # the newest wins a (2^-32) id clash

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        nonce = secrets.token_bytes(12)
        ciphertext, tag = AES.new(self._current, AES.MODE_GCM, nonce=nonce).encrypt_and_digest(plaintext)
        return self._current_name, nonce + tag + ciphertext

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        if ciphername == "aes":  # LangGraph's own layout: EAX, nonce 16 + tag 16
            nonce, tag, body = ciphertext[:16], ciphertext[16:32], ciphertext[32:]
            for key in self._keys.values():
                try:
                    return AES.new(key, AES.MODE_EAX, nonce=nonce).decrypt_and_verify(body, tag)
                except ValueError:
                    continue
            raise CheckpointKeyError("checkpoint failed authentication: wrong key, or the stored bytes were changed")
        if not ciphername.startswith("aesgcm-"):
            raise CheckpointKeyError(f"checkpoint encrypted with an unknown cipher {ciphername!r}")
        found = self._keys.get(ciphername[7:])
        if found is None:
            raise CheckpointKeyError(
                f"checkpoint written with key {ciphername[7:]}, which is neither DIALGRAPH_CHECKPOINT_KEY"
                " nor one of DIALGRAPH_CHECKPOINT_OLD_KEYS"
            )
        nonce, tag, body = ciphertext[:12], ciphertext[12:28], ciphertext[28:]
        try:
            return AES.new(found, AES.MODE_GCM, nonce=nonce).decrypt_and_verify(body, tag)
        except ValueError:
            raise CheckpointKeyError(
                "checkpoint failed authentication: wrong key, or the stored bytes were changed"
            ) from None


class CheckpointEncryption(EncryptedSerializer):
    """LangGraph's ``EncryptedSerializer``; an empty value (``None``) is stored as it is
    (nothing to hide, and one cipher call less per empty channel)."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        type_, data = self.serde.dumps_typed(obj)
        if not data:
            return type_, data
        ciphername, ciphertext = self.cipher.encrypt(data)
        return f"{type_}+{ciphername}", ciphertext


def serializer(*, redactor: Redactor | None = None, keys: Sequence[bytes] = ()) -> SerializerProtocol:
    """The checkpoint serializer: ``MessageMemoSerializer`` (redacting with ``redactor``),
    wrapped in LangGraph's ``EncryptedSerializer`` when there are ``keys`` (newest first)."""
    inner = MessageMemoSerializer(redactor)
    if not keys:
        return inner
    return CheckpointEncryption(KeyringCipher(keys), inner)


def serializer_for(settings: Settings) -> SerializerProtocol:
    """``serializer`` of ``settings``: its ``[redaction]``, its checkpoint keys. In
    production without a key it warns (checkpoints are still redacted; encryption is
    off) rather than refusing to start: see the README's "Safety and privacy"."""
    keys = settings.checkpoint_keys
    if not settings.checkpoint_key.get_secret_value() and keys:
        raise CheckpointKeyError("DIALGRAPH_CHECKPOINT_OLD_KEYS without DIALGRAPH_CHECKPOINT_KEY")
    if not keys and settings.env == "production":
        log.warning(
            "checkpoint encryption is OFF in production: set DIALGRAPH_CHECKPOINT_KEY"
            " (checkpoints are redacted, but stored unencrypted)"
        )
    return serializer(redactor=redactor_for(settings.redaction), keys=keys)
