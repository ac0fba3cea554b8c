"""The console's pure parts: session cookies and CSRF tokens, and the flow graph drawing."""

from __future__ import annotations

import re

from dialgraph.server.dashboard.graph_svg import Edge, render
from dialgraph.server.dashboard.session import SessionSigner


def test_a_session_cookie_verifies_until_it_expires() -> None:
    signer = SessionSigner("admin-secret", lifetime_s=60)
    cookie = signer.issue(now=1000)
    session = signer.verify(cookie, now=1059)
    assert session is not None and session.expires_at == 1060
    assert signer.verify(cookie, now=1060) is None


def test_forged_or_foreign_cookies_are_refused() -> None:
    signer = SessionSigner("admin-secret", lifetime_s=60)
    cookie = signer.issue(now=1000)
    expires, nonce, mac = cookie.split(".")
    assert signer.verify(f"{int(expires) + 3600}.{nonce}.{mac}", now=1000) is None  # stretched
    assert signer.verify(f"{expires}.{nonce}x.{mac}", now=1000) is None
    assert signer.verify("garbage", now=1000) is None
    assert SessionSigner("another-token", lifetime_s=60).verify(cookie, now=1000) is None  # token changed
    assert SessionSigner("", lifetime_s=60).verify(cookie, now=1000) is None  # console off


def test_csrf_token_belongs_to_its_session() -> None:
    signer = SessionSigner("admin-secret", lifetime_s=60)
    one = signer.verify(signer.issue(now=0), now=1)
    two = signer.verify(signer.issue(now=0), now=1)
    assert one is not None and two is not None and one.csrf != two.csrf
    assert SessionSigner.check_csrf(one, one.csrf)
    assert not SessionSigner.check_csrf(one, two.csrf)
    assert not SessionSigner.check_csrf(one, "")
    assert not SessionSigner.check_csrf(one, None)


def test_the_admin_token_check() -> None:
    assert SessionSigner("admin-secret", lifetime_s=1).check_token(" admin-secret ")
    assert not SessionSigner("admin-secret", lifetime_s=1).check_token("admin-secre")
    assert not SessionSigner("", lifetime_s=1).check_token("")


FLOW = ["__start__", "greeting", "agent", "tools", "__end__"]
EDGES = [
    Edge("__start__", "greeting", True),
    Edge("__start__", "agent", True),
    Edge("agent", "tools", True),
    Edge("tools", "agent"),
    Edge("agent", "__end__", True),
    Edge("greeting", "__end__"),
]


def test_every_node_and_edge_is_drawn_and_a_walk_is_marked() -> None:
    svg = render(FLOW, EDGES, visits={"agent": 2, "tools": 1}, walked={("agent", "tools"): 1}, title="t <x>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<title>t &lt;x&gt;</title>" in svg  # escaped
    assert len(re.findall(r'class="node', svg)) == len(FLOW)
    assert len(re.findall(r'class="edge', svg)) == len(EDGES)
    assert re.search(r'class="node visited" data-node="agent".*?agent ×2', svg)
    assert 'class="node" data-node="greeting"' in svg
    assert len(re.findall(r'class="edge walked"', svg)) == 1
    assert svg.count("stroke-dasharray") == 4  # the conditional edges


def test_layers_put_the_end_alone_at_the_bottom() -> None:
    svg = render(FLOW, EDGES)
    tops = {m[0]: float(m[1]) for m in re.findall(r'data-node="([^"]+)"><rect x="[\d.]+" y="([\d.]+)"', svg)}
    assert tops["__start__"] < tops["greeting"] == tops["agent"] < tops["tools"] < tops["__end__"]
    assert sorted(tops.values()).count(tops["__end__"]) == 1
