"""Signed end-of-call webhooks: reports and call events POSTed to the team's own systems.

- ``queue.enqueue(db, settings, event, call=... | campaign=...)``: what the app calls when
  something happens (one INSERT into ``webhook_deliveries``; never a POST, never raises);
- ``worker.WebhookWorker``: every instance's delivery loop (claim, sign, POST, retry);
- ``signing.verify_signature(secret, body, header)``: what a receiver checks;
- ``report``: the bodies; configuration: ``server/core/webhooks_config.py``.
"""

from __future__ import annotations

from dialgraph.server.webhooks.queue import enqueue
from dialgraph.server.webhooks.signing import sign, verify_signature

__all__ = ["enqueue", "sign", "verify_signature"]
