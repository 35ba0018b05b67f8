"""The engine's built-in commands, as platforms list them in their command menus.

The engine parses ``/name`` itself; adapters only advertise these and pass the text through.
"""

from __future__ import annotations

BOT_COMMANDS: dict[str, str] = {
    "start": "Start a conversation",
    "help": "What this bot can do",
    "reset": "Start our conversation over",
    "forget": "Erase everything stored about you",
    "human": "Ask for a person",
}
