"""Domain events: recorded with the change that causes them, published to RabbitMQ later.

- `envelope.py`: the event types and the envelope every event travels in; the JSON Schema of
  the envelope and of each type's payload live in `schemas/`.
- `models.py`, `outbox.py`: cart, order and account events are rows of the `outbox` table,
  added in the same unit of work as the change (a rolled-back change leaves no event, a
  committed one always has its event). Product events ride in the product document itself
  (app/products/events.py) and are moved into the outbox by the relay.
- `relay.py` (`flask events relay`, `cli.py`) publishes the outbox to RabbitMQ with publisher
  confirms, in per-aggregate order; without RabbitMQ it hands each event to the consumers in
  process.
- `consumers.py` runs an event's handlers exactly once in effect (`processed_events` in the
  transaction of the effect); `amqp.py` and `consumer_commands.py` (`flask events consume`,
  `flask events dlq ...`) feed them from RabbitMQ, poison messages going to a dead-letter
  queue; `audit.py` is the audit trail consumer and its reader (`setup.py` registers it).
"""
