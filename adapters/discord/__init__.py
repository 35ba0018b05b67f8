"""Discord, through discord.py: the channel (``channel.py``)."""
