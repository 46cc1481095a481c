"""The one clock every expiry decision reads (holds, carts, idempotency keys).

Code calls `clock.now()` through the module, so a test can move time with
`monkeypatch.setattr(clock, "now", ...)` instead of sleeping.
"""

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
