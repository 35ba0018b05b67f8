"""``serving.json``: what a model version needs from the engine beyond its weights.

Written by training next to a model that learnt with the engine's system turn, read by the
backend that serves it. A version without the file (our from-scratch models) gets no system turn,
as it was trained.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

NAME = "serving.json"


@dataclass(frozen=True, slots=True)
class ServingCard:
    #: prepend the team's system turn (SYSTEM_PROMPT) to every prompt
    system_turn: bool = False

    @classmethod
    def read(cls, model_dir: Path) -> ServingCard:
        path = model_dir / NAME
        if not path.is_file():
            return cls()
        return cls(system_turn=bool(json.loads(path.read_text()).get("system_turn", False)))

    def write(self, model_dir: Path) -> None:
        (model_dir / NAME).write_text(json.dumps(asdict(self), indent=2))
