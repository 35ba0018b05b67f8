"""The corpus: every stage before a model sees a token.

- ``sources``: source readers behind one interface and the ``Conversation`` record later stages use
- ``gather``: the configured sources into ``<work_dir>/gathered.jsonl``
- ``clean``: normalise, filter, scrub PII, deduplicate (``dedup``), split (``split``)
- ``export``: the chat log as training files (SFT targets, preference pairs, the regression set)
- ``grounded``: grounded-answer (RAFT-style) training data from the knowledge base's documents

Data files read by the stages live here too: ``assistant_register.jsonl`` (seed chats in the
assistant's register) and ``router_*.txt`` (the message router's own examples).
"""
