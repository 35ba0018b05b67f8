"""Telegram, through python-telegram-bot: the channel (``channel.py``)."""
