"""The web chat: the WebSocket channel (``channel.py``) and the origins it accepts (``origins.py``)."""
