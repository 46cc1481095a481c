"""Domain events: recorded with the change that causes them, published to RabbitMQ later.

- `envelope.py`: the event types and the envelope every event travels in; the JSON Schema of
  each type's payload lives in `schemas/` (one file per type).
- `outbox.py`: cart, order and account events are rows of the `outbox` table, added in the
  same unit of work as the change (a rolled-back change leaves no event, a committed one
  always has its event). Product events ride in the product document itself and are moved
  into the outbox by the relay (`product_outbox.py`).
- `relay.py` (`flask events relay`) publishes the outbox to RabbitMQ with publisher
  confirms, in per-aggregate order; `consumers.py` (`flask events consume`) delivers each
  event to idempotent consumers, poison messages going to a dead-letter queue.
"""
