"""Keeping and replacing models.

- ``registry``: the register stage: versioned directories under ``models/``, promote, rollback
- ``retrain``: the cycle from the chat log: export -> fine-tune -> evaluate -> gate -> register
"""
