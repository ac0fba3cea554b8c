"""Twilio signatures and stream tokens (pure functions)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from dialgraph.server.core.enums import SignalKind, StreamSignal
from dialgraph.server.core.security import (
    InvalidStreamToken,
    StreamClaims,
    is_valid_twilio_signature,
    issue_stream_token,
    twilio_signature,
    verify_stream_token,
    ws_signature_ok,
)

DOCS_URL = "https://example.com/myapp.php?foo=1&bar=2"
DOCS_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675310",
    "Digits": "1234",
    "From": "+14158675310",
    "To": "+18005551212",
}
DOCS_SIGNATURE = "L/OH5YylLD5NRKLltdqwSvS0BnU="


def test_docs_example_signature() -> None:
    assert twilio_signature("12345", DOCS_URL, DOCS_PARAMS) == DOCS_SIGNATURE
    assert is_valid_twilio_signature("12345", DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE)
    assert RequestValidator("12345").validate(DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE)


@pytest.mark.parametrize(
    ("url", "params", "signature"),
    [
        (DOCS_URL, DOCS_PARAMS, "L/OH5YylLD5NRKLltdqwSvS0BnV="),  # forged
        (DOCS_URL, {**DOCS_PARAMS, "Digits": "1235"}, DOCS_SIGNATURE),  # tampered field
        (DOCS_URL, {k: v for k, v in DOCS_PARAMS.items() if k != "Digits"}, DOCS_SIGNATURE),  # dropped field
        ("https://example.com/other.php?foo=1&bar=2", DOCS_PARAMS, DOCS_SIGNATURE),  # replayed elsewhere
        ("http://example.com/myapp.php?foo=1&bar=2", DOCS_PARAMS, DOCS_SIGNATURE),  # other scheme
        (DOCS_URL + "/", DOCS_PARAMS, DOCS_SIGNATURE),  # trailing slash
        (DOCS_URL, DOCS_PARAMS, ""),
        (DOCS_URL, DOCS_PARAMS, None),
    ],
)
def test_rejects(url: str, params: dict[str, str], signature: str | None) -> None:
    assert not is_valid_twilio_signature("12345", url, params, signature)


def test_wrong_token_and_empty_token_rejected() -> None:
    assert not is_valid_twilio_signature("54321", DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE)
    assert not is_valid_twilio_signature("", DOCS_URL, DOCS_PARAMS, twilio_signature("", DOCS_URL, DOCS_PARAMS))


def test_port_variants_accepted_like_request_validator() -> None:
    signed_with_port = twilio_signature("12345", "https://example.com:443/myapp.php?foo=1&bar=2", DOCS_PARAMS)
    assert is_valid_twilio_signature("12345", DOCS_URL, DOCS_PARAMS, signed_with_port)
    assert RequestValidator("12345").validate(DOCS_URL, DOCS_PARAMS, signed_with_port)
    signed_without = twilio_signature("12345", "https://example.com/x", {})
    assert is_valid_twilio_signature("12345", "https://example.com:443/x", {}, signed_without)
    # Like RequestValidator, any explicit port may also be left out (our URL comes from config).
    odd_port = "https://example.com:8443/x"
    assert is_valid_twilio_signature("12345", odd_port, {}, signed_without)
    assert RequestValidator("12345").validate(odd_port, {}, signed_without)
    assert not is_valid_twilio_signature("12345", "https://example.com:8443/y", {}, signed_without)


def test_repeated_fields_sign_like_request_validator() -> None:
    pairs = [("StatusCallbackEvent", "ringing"), ("StatusCallbackEvent", "answered"), ("A", "1")]

    class Multi(dict[str, str]):  # what RequestValidator expects of a multi-valued form
        def getall(self, name: str) -> list[str]:
            return [v for n, v in pairs if n == name]

    expected = RequestValidator("t").compute_signature("https://h/p", Multi(pairs))
    assert twilio_signature("t", "https://h/p", pairs) == expected
    assert twilio_signature("t", "https://h/p", list(reversed(pairs))) == expected
    assert twilio_signature("t", "https://h/p", pairs[1:]) != expected


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@given(
    path=st.text(st.sampled_from("abcxyz/-_.~%20"), max_size=20),
    query=st.one_of(st.just(""), st.text(st.sampled_from("abc=&123%+"), max_size=20)),
    params=st.dictionaries(_text, _text, max_size=6),
    token=st.text(min_size=1, max_size=40),
    port=st.sampled_from(["", ":443"]),
)
@settings(max_examples=200, deadline=None)
def test_matches_request_validator(path: str, query: str, params: dict[str, str], token: str, port: str) -> None:
    url = f"https://voice.example.com{port}/{path}" + (f"?{query}" if query else "")
    validator = RequestValidator(token)
    expected = validator.compute_signature(url, params)
    assert twilio_signature(token, url, params) == expected
    assert is_valid_twilio_signature(token, url, params, expected) == validator.validate(url, params, expected) is True
    forged = ("A" if expected[0] != "A" else "B") + expected[1:]
    assert not is_valid_twilio_signature(token, url, params, forged)


def test_ws_signature() -> None:
    sig = twilio_signature("tok", "wss://voice.example.com/twilio/media", {})
    assert ws_signature_ok("tok", "https://voice.example.com", "/twilio/media", sig)
    assert ws_signature_ok("tok", "https://voice.example.com/", "/twilio/media/", sig)
    slash = twilio_signature("tok", "wss://voice.example.com/twilio/media/", {})
    assert ws_signature_ok("tok", "https://voice.example.com", "/twilio/media", slash)
    assert not ws_signature_ok("tok", "https://voice.example.com", "/twilio/other", sig)
    assert not ws_signature_ok("tok", "https://evil.example.com", "/twilio/media", sig)
    assert not ws_signature_ok("tok", "https://voice.example.com", "/twilio/media", None)
    assert not ws_signature_ok("other", "https://voice.example.com", "/twilio/media", sig)
    plain = twilio_signature("tok", "ws://127.0.0.1:8000/twilio/media", {})
    assert ws_signature_ok("tok", "http://127.0.0.1:8000", "/twilio/media", plain)
    # The https signature over wss is not the same as one over https.
    https_sig = twilio_signature("tok", "https://voice.example.com/twilio/media", {})
    assert not ws_signature_ok("tok", "https://voice.example.com", "/twilio/media", https_sig)


# --- stream tokens ------------------------------------------------------------------------------
SID = "CA" + "0123456789abcdef" * 2


def test_token_round_trip() -> None:
    token = issue_stream_token(
        "s3cret",
        call_sid=SID,
        thread_id="thread-1",
        flow="support",
        ttl_s=60,
        signal=StreamSignal(SignalKind.TRANSFER_FAILED, "busy"),
        now=1000,
    )
    assert len(token) < 500
    assert token.replace(".", "").replace("-", "").replace("_", "").isalnum()
    claims = verify_stream_token("s3cret", token, now=1059.9)
    assert claims == StreamClaims(
        call_sid=SID,
        thread_id="thread-1",
        flow="support",
        signal="transfer_failed:busy",
        expires_at=1060,
        jti=claims.jti,
    )
    assert len(claims.jti) >= 16


def test_every_token_has_its_own_id() -> None:
    tokens = {
        issue_stream_token("s3cret", call_sid=SID, thread_id=SID, flow="f", ttl_s=60, now=1000) for _ in range(50)
    }
    assert len({verify_stream_token("s3cret", t, now=1001).jti for t in tokens}) == 50


def signed_token(secret: str, claims: dict[str, object]) -> str:
    """A token with any claims, signed the way the server signs (to test what it accepts)."""
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    mac = hmac.new(secret.encode(), f"v1.{body}".encode(), hashlib.sha256).digest()
    return f"v1.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@pytest.mark.parametrize("jti", [None, "", 7])
def test_a_token_without_an_id_is_refused(jti: object) -> None:
    claims: dict[str, object] = {"c": SID, "t": SID, "f": "support", "s": "", "e": 2000}
    assert verify_stream_token("s3cret", signed_token("s3cret", {**claims, "j": "abc"}), now=1000).jti == "abc"
    if jti is not None:
        claims["j"] = jti
    with pytest.raises(InvalidStreamToken, match="malformed"):
        verify_stream_token("s3cret", signed_token("s3cret", claims), now=1000)


def test_token_expiry() -> None:
    token = issue_stream_token("s3cret", call_sid=SID, thread_id=SID, flow="sales", ttl_s=120, now=1000)
    assert verify_stream_token("s3cret", token, now=1119).flow == "sales"
    with pytest.raises(InvalidStreamToken, match="expired"):
        verify_stream_token("s3cret", token, now=1120)


def test_token_other_secret_rejected() -> None:
    token = issue_stream_token("s3cret", call_sid=SID, thread_id=SID, flow="sales", ttl_s=120)
    with pytest.raises(InvalidStreamToken):
        verify_stream_token("other", token)
    with pytest.raises(InvalidStreamToken):
        verify_stream_token("", token)


def test_token_too_long_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        issue_stream_token("s", call_sid=SID, thread_id="t" * 400, flow="f", ttl_s=60)


@pytest.mark.parametrize("garbage", ["", "v1", "v1..", "v2.a.b", "v1.e30.", "....", "v1.!!!.???", "é" * 10, "x" * 600])
def test_token_garbage(garbage: str) -> None:
    with pytest.raises(InvalidStreamToken):
        verify_stream_token("s3cret", garbage)


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_token_tamper_always_rejected(data: st.DataObject) -> None:
    token = issue_stream_token(
        "s3cret",
        call_sid=SID,
        thread_id=SID,
        flow="scheduling",
        ttl_s=60,
        signal=StreamSignal(SignalKind.RECONNECTED),
        now=0,
    )
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != token[index]))
    tampered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(InvalidStreamToken):
        verify_stream_token("s3cret", tampered, now=1)


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_token_arbitrary_text_only_raises_typed_error(text: str) -> None:
    with pytest.raises(InvalidStreamToken):
        verify_stream_token("s3cret", text)
