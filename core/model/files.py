"""Loading one model version from disk: whole weights, or a LoRA adapter over a built base.

Every reader of model versions (the serving backend, evaluation, the promotion gate, retraining)
loads through here, so an adapter version works wherever a full one does. An adapter is merged
into its base in memory: serving runs plain weights (and may quantise them), with no peft at
generation time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from core.model.bases import is_adapter, resolve_base


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The version's own tokenizer, or its base's when an adapter ships none."""
    src = model_dir
    if is_adapter(model_dir) and not (model_dir / "tokenizer_config.json").is_file():
        src = resolve_base(model_dir)
    return AutoTokenizer.from_pretrained(src)


def load_causal_lm(model_dir: Path, dtype: torch.dtype | str = torch.float32) -> PreTrainedModel:
    """Whole weights as saved, or base + adapter merged (raises BaseModelError if the base is not built)."""
    if not is_adapter(model_dir):
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        return model
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(resolve_base(model_dir), dtype=torch.float32)
    merged: PreTrainedModel = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
    if not isinstance(dtype, torch.dtype):
        return merged
    # transformers wraps PreTrainedModel.to in functools.wraps(Module.to), which types away `self`
    converted: PreTrainedModel = merged.to(dtype)  # type: ignore[arg-type]
    return converted


def decode_one(tokenizer: PreTrainedTokenizerBase, ids: list[int] | torch.Tensor) -> str:
    """One sequence's text, special tokens dropped (``decode`` answers a list only for a batch)."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if not isinstance(text, str):
        raise TypeError(f"expected one token sequence, got a batch of {len(text)}")
    return text
