"""A guest's cart into the user's at sign-in: the lines move or add up within the limits and
the stock that can be held, then lines cut short by the guest's own holds take them up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from app.cart import events, holds
from app.cart.contents import Draft, render
from app.cart.dto import MergeAdjustment, MergeResult
from app.cart.errors import QuantityLimitExceeded, UnitLimitExceeded
from app.cart.lines import LineWrites
from app.cart.models import Line, utcnow
from app.cart.store import MAX_LINE_QUANTITY
from app.products import interface as products
from app.transactions import unit_of_work


class GuestCartMerge(LineWrites):
    def merge(self, guest_id: str, user_id: str) -> MergeResult:
        """Move a guest's cart into a user's: quantities add up, capped by the line maximum,
        the cart's limits and by what can be reserved. The guest cart ends `merged`; merging
        again is a no-op.

        Order of steps, as everywhere here: grow the user's holds, then commit the lines,
        then release (or cut down) the guest's holds, so a failure only ever leaves stock
        over-held; then lines cut short because the guest's own units were still held take
        them up.
        """
        with unit_of_work():
            guest_cart = self._find_cart(guest_id, lock=True)
            nothing_to_merge = guest_cart is None or not guest_cart.lines
            if not nothing_to_merge:
                cart = self._locked_cart(user_id)  # in the same transaction: the guest cart stays locked
                merged_lines = len(guest_cart.lines)
                adjustments, settle = self._merge_lines(guest_cart, cart)
                guest_cart.row.status = "merged"
                events.merged(cart, guest_cart, merged_lines, adjustments)
                self._bump(guest_cart)
                self._bump(cart)
                contents = cart.contents()
        if nothing_to_merge:
            return MergeResult(cart=self.get(user_id), merged_lines=0, adjustments=())
        self.cache.changed(guest_id, user_id)
        holds.settle(settle)
        short = [adjustment for adjustment in adjustments if adjustment.reason == "insufficient_stock"]
        if not short:
            current = self._current_products(contents.product_ids, fresh=contents.product_ids)
            return MergeResult(
                cart=render(contents, current), merged_lines=merged_lines, adjustments=tuple(adjustments)
            )
        topped_up = {adjustment.product_id: self._top_up(user_id, adjustment) for adjustment in short}
        kept = [topped_up.get(adjustment.product_id, adjustment) for adjustment in adjustments]
        remaining = tuple(adjustment for adjustment in kept if adjustment.merged < adjustment.requested)
        return MergeResult(cart=self.get(user_id), merged_lines=merged_lines, adjustments=remaining)

    def _merge_lines(self, guest_cart: Draft, cart: Draft) -> tuple[list[MergeAdjustment], list[Callable[[], object]]]:
        """Move or add up each guest line; the adjustments, and what to do to the guest's
        holds once the lines are committed."""
        adjustments: list[MergeAdjustment] = []
        settle: list[Callable[[], object]] = []
        now = utcnow()
        for guest_line in list(guest_cart.lines):
            guest_cart.lines.remove(guest_line)
            product_id, rid = guest_line.product_id, guest_line.reservation_id
            line = cart.line(product_id)
            room = self.limits.max_units - sum(existing.quantity for existing in cart.lines)
            refusal = None
            if line is None:
                if cart.lines and guest_cart.currency != cart.currency:
                    refusal = "currency_mismatch"
                elif len(cart.lines) >= self.limits.max_lines:
                    refusal = "line_limit"
            if refusal is None and room <= 0:
                refusal = "unit_limit"
            if refusal is not None:
                adjustments.append(
                    MergeAdjustment(product_id, guest_line.quantity, line.quantity if line else 0, refusal)
                )
                settle.append(holds.release_line(guest_line, now))
                continue
            if line is None:  # the line moves over with its hold, cut down to the room left
                if not cart.lines:
                    cart.row.currency = guest_cart.currency
                cart.lines.append(guest_line)
                if guest_line.quantity > room:
                    adjustments.append(MergeAdjustment(product_id, guest_line.quantity, room, "unit_limit"))
                    held = holds.held_units(guest_line, now)
                    guest_line.quantity = room
                    settle.append(holds.shrink(rid, product_id, room, guest_line.reserved_until, held))
                continue
            requested = line.quantity + guest_line.quantity
            allowed = min(requested, MAX_LINE_QUANTITY, line.quantity + room)
            merged = self._grow_for_merge(line, allowed)
            if merged < requested:
                if merged < allowed:
                    reason = "insufficient_stock"
                else:
                    reason = "quantity_limit" if allowed == MAX_LINE_QUANTITY else "unit_limit"
                adjustments.append(MergeAdjustment(product_id, requested, merged, reason))
            settle.append(holds.release_line(guest_line, now))
        return adjustments, settle

    def _grow_for_merge(self, line: Line, wanted: int) -> int:
        """Hold up to `wanted` units on the line; returns how many it holds."""
        now = utcnow()
        try:
            hold = self._hold(line, line.product_id, wanted, now)
        except products.InsufficientStock as short:
            held = 0 if holds.expired(line, now) else line.quantity
            wanted = held + short.available
            hold = self._hold(line, line.product_id, wanted, now)
        line.quantity, line.reservation_id, line.reserved_until = wanted, hold.reservation_id, hold.until
        return wanted

    def _top_up(self, user_id: str, adjustment: MergeAdjustment) -> MergeAdjustment:
        """Grow a merged line that stock cut short, now that the guest's own holds are released.

        While the user's line first grew, the guest's units were still held, so they counted as
        taken. Released, they are free again: the line takes as many as it can get up to what
        the merge allowed (another buyer may have taken some in between), in a unit of work of
        its own, reserve first.
        """
        wanted = min(adjustment.requested, MAX_LINE_QUANTITY)
        try:
            self.set_quantity(user_id, adjustment.product_id, wanted)
        except products.InsufficientStock as short:
            wanted = adjustment.merged + short.available
            if wanted <= adjustment.merged:
                return adjustment
            try:
                self.set_quantity(user_id, adjustment.product_id, wanted)
            except (products.InsufficientStock, QuantityLimitExceeded, UnitLimitExceeded):
                return adjustment
        except (QuantityLimitExceeded, UnitLimitExceeded):  # the cart changed meanwhile
            return adjustment
        reason = "quantity_limit" if wanted == MAX_LINE_QUANTITY < adjustment.requested else adjustment.reason
        return replace(adjustment, merged=wanted, reason=reason)
