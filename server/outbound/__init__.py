"""Calling out: one call by API or CLI, or campaigns of many, with compliance checks.

``compliance`` decides whether a call may be placed (do-not-call lists, calling hours in
the callee's zone, India's DLT rules, attempts per day); ``placer`` places one call through
Twilio's REST API; ``campaigns`` is the SQL queue several instances share; ``dispatcher``
is each instance's loop that claims contacts and places their calls.
"""
