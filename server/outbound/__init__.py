"""Calling out: one call by API or CLI, or campaigns of many, with compliance checks.

``compliance`` decides whether a call may be placed (do-not-call lists, calling hours in
the callee's zone, India's DLT rules, attempts per day); ``placer`` places one call through
Twilio's REST API (``rates``: the account's calls per second; ``audit``: every decision);
``campaigns`` creates and steers campaigns; ``contact_queue`` is the SQL queue of their
contacts that several instances share; ``reaper`` finishes what dead instances left;
``dispatcher`` is each instance's loop that claims contacts and places their calls;
``voicemail`` is the message left on a machine; ``commands`` the CLI verbs.
"""
