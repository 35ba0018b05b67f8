"""Slack, through slack_sdk: the channel (``channel.py``), its Events API acknowledgements
(``acks.py``) and HTTP client (``http.py``), and the agents' desk (``agent_desk.py``)."""
