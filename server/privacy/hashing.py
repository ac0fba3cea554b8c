"""The key of the hash that keeps an erased person's opt-out (and names them in logs).

``privacy_hash_key`` (``DIALGRAPH_PRIVACY_HASH_KEY``, a secret: environment only) when set;
otherwise a key derived from ``stream_token_secret`` (HMAC-SHA256 of a fixed label), so a
deployment without the setting still gets a secret, stable key. Changing the key, or the
stream token secret while ``privacy_hash_key`` is unset, makes every stored hash match
nothing: the erased people's opt-outs are forgotten. Set ``privacy_hash_key`` before the
first erasure and never change it.
"""

from __future__ import annotations

import hashlib
import hmac

from dialgraph.server.core.settings import Settings
from dialgraph.tools.do_not_call import HASH_PREFIX, normalise_number, number_hash

_DERIVE_LABEL = b"dialgraph/privacy-hash/v1"


def privacy_key(settings: Settings) -> bytes:
    """The hash key of this deployment (see the module docstring)."""
    given = settings.privacy_hash_key.get_secret_value()
    if given:
        return given.encode("utf-8")
    base = settings.stream_token_secret.get_secret_value().encode("utf-8")
    return hmac.new(base, _DERIVE_LABEL, hashlib.sha256).digest()


def person_ref(number: str, key: bytes) -> str:
    """How logs name a person without their number: the same keyed hash their opt-out is
    kept as (``h:`` + 30 hex digits)."""
    return number_hash(normalise_number(number) or number, key)


__all__ = ["HASH_PREFIX", "number_hash", "person_ref", "privacy_key"]
