"""Keys that encrypt checkpoints at rest (``DIALGRAPH_CHECKPOINT_KEY``), as settings read them.

A key is 16, 24 or 32 bytes (AES-128/192/256), written as, in this order:

1. 32, 48 or 64 hex digits;
2. exactly 16, 24 or 32 characters: those characters (what LangGraph's ``LANGGRAPH_AES_KEY`` takes);
3. base64 (standard or url-safe, padding optional) of 16, 24 or 32 bytes: ``openssl rand
   -base64 32`` or ``python -c "import secrets; print(secrets.token_urlsafe(32))"`` make one.

Rotation: ``DIALGRAPH_CHECKPOINT_KEY`` is the key new checkpoints are written with;
``DIALGRAPH_CHECKPOINT_OLD_KEYS`` (comma-separated) are keys still accepted for reading.
Every encrypted value names the key it was written with by ``key_id`` (a hash of the key,
never the key), so reading picks the right key and an unknown one fails by name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

KEY_SIZES = (16, 24, 32)
_HEX = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64}")


class CheckpointKeyError(ValueError):
    """A checkpoint key is malformed, missing, or not the one a checkpoint was written with."""


def parse_key(text: str) -> bytes:
    """The AES key ``text`` writes (see the module docstring); raises ``CheckpointKeyError``
    (without the key in its message)."""
    raw = text.strip()
    if _HEX.fullmatch(raw):
        return bytes.fromhex(raw)
    plain = raw.encode("utf-8")
    if len(raw) in KEY_SIZES and len(plain) == len(raw):
        return plain
    std = plain.replace(b"-", b"+").replace(b"_", b"/")  # url-safe or standard alphabet
    try:
        key = base64.b64decode(std + b"=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) in KEY_SIZES:
        return key
    raise CheckpointKeyError(
        "a checkpoint key must be 16, 24 or 32 bytes: base64 or hex of them, or that many characters"
    )


def parse_keys(text: str) -> list[bytes]:
    """Comma-separated keys (``DIALGRAPH_CHECKPOINT_OLD_KEYS``), in order."""
    return [parse_key(part) for part in text.split(",") if part.strip()]


def key_id(key: bytes) -> str:
    """A short public name of ``key`` (8 hex digits of a hash): stored with what it encrypted."""
    return hashlib.sha256(b"dialgraph checkpoint key\x00" + key).hexdigest()[:8]
