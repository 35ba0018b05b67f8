"""Delivery: getting what the engine and agents say to the platforms.

``outbox`` keeps every outgoing message in Redis until a channel has sent it (the one retry layer,
with a deadline, surviving restarts); ``partials`` streams the newest partial reply to a channel at
the pace the platform allows.
"""

from core.delivery.outbox import (
    DeliveryDeadlineError,
    DeliveryError,
    Outbox,
    Pending,
    PermanentDeliveryError,
    Undelivered,
    in_memory,
)
from core.delivery.partials import PartialPump

__all__ = [
    "DeliveryDeadlineError",
    "DeliveryError",
    "Outbox",
    "PartialPump",
    "Pending",
    "PermanentDeliveryError",
    "Undelivered",
    "in_memory",
]
