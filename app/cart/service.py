"""Cart rules: one active cart per owner, lines that always hold a stock reservation.

Stock lives in the products store and carts in PostgreSQL, with no shared transaction, so
the steps are ordered to fail safe: stock is reserved *before* a line is written or grown,
and released only *after* a line is shrunk or deleted. A crash in between leaves a
reservation without a line (released when it expires, or by `flask inventory reconcile`)
or nothing, never a line without its reservation.

`Carts` is what the interface calls, built once by setup.py; each of its parts is a module
that reads on its own:

- store.py: finding, creating and locking a cart, reading it, what every write does to it
  (the locking design);
- holds.py: the stock hold behind each line;
- contents.py: a cart inside a write, as committed and as answered;
- lines.py: add, set a quantity, remove, empty, and the limits;
- merge.py: a guest's cart into the user's at sign-in;
- checkout.py: the cart into an order;
- orders.py: orders read back.
"""

from __future__ import annotations

from app.cart.checkout import Checkout
from app.cart.merge import GuestCartMerge
from app.cart.orders import OrderReads

__all__ = ["Carts"]


class Carts(GuestCartMerge, Checkout, OrderReads):
    """Every cart operation on one object; its parts share the settings and the locked cart
    of CartStore (store.py)."""
