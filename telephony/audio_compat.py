"""``audioop`` from the stdlib (< 3.13) or the audioop-lts backport (>= 3.13)."""

import sys

if sys.version_info >= (3, 13):  # pragma: no cover - depends on the interpreter
    import audioop  # audioop-lts installs under the same name
else:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

__all__ = ["audioop"]
