"""Delivery: getting what the engine and agents say to the platforms.

``pending`` is one message on its way (what a channel's ``send`` is handed); ``outbox`` keeps every
outgoing message in Redis until a channel has sent it (the one retry layer, with a deadline,
surviving restarts), and hands a message to the process that runs its platform (``wakeup``),
showing the agents each message's state (``states``);
``partials`` streams the newest partial reply to a channel at the pace the platform allows.

Nothing is imported here: ``core.channel`` imports ``pending``, and ``outbox`` imports
``core.channel``; importing the package must not import them all, or the circle comes back.
"""
