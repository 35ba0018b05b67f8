"""WhatsApp Cloud API, through pywa: the channel (``channel.py``), its message rendering
(``messages.py``) and the 24-hour customer-service window (``window.py``)."""
