"""How the local backend generates and batches: built from the settings (``from_settings``), which
hold every default; torch-free, so configuring a backend does not load one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class DecodingConfig:
    SETTINGS_PREFIX: ClassVar[str] = ""

    max_new_tokens: int
    num_beams: int
    num_candidates: int
    do_sample: bool
    temperature: float
    top_p: float
    repetition_penalty: float
    no_repeat_ngram_size: int


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    SETTINGS_PREFIX: ClassVar[str] = "model_"

    max_batch: int
    batch_wait_s: float
    max_queue: int
    continuous: bool
