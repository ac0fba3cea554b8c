"""Privacy duties over stored personal data: retention (``retention.py``: prune each kind
past its period, on demand or on a schedule) and erasure of one person on request
(``erasure.py``, DPDP Act 2023 / GDPR), with the keyed hash an erased opt-out is kept as
(``hashing.py``)."""
