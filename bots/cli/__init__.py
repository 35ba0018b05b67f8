"""The ``chatbot`` command line (``main``) and its command groups: ``agents``, ``admin``,
``calibrate``, ``config`` (``settings_doc``) and ``chat`` (``terminal_chat``). Training's commands
live in ``training.cli`` and are mounted under ``chatbot train``."""
