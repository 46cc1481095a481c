"""Money at the products store's edge: Decimal in code, integer minor units in MongoDB."""

from decimal import Decimal

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> int:
    """Exact conversion; amounts are validated to two places before they get here."""
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{amount} has more than two decimal places")
    return int(cents)


def to_decimal(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)
