"""``/v1/models``: the served version as an OpenAI model object, naming the base it grew from."""

from __future__ import annotations

from pathlib import Path

from core.model.bases import ADAPTER_CONFIG, BASE_CARD, BaseRef, is_adapter

OWNER = "chatbot"


def model_card(model_dir: Path) -> dict[str, object]:
    """``id``: the version (its directory's name); ``created``: when its weights were written;
    ``parent``: the base an adapter version runs on (its ``base.json`` name), null for whole weights;
    ``root``: the weights it all starts from, the base or the version itself (as vLLM lists LoRAs)."""
    adapter = is_adapter(model_dir)
    weights = model_dir / (ADAPTER_CONFIG if adapter else "config.json")
    base = BaseRef.read(model_dir / BASE_CARD).name if adapter else None
    return {
        "id": model_dir.name,
        "object": "model",
        "created": int(weights.stat().st_mtime),
        "owned_by": OWNER,
        "root": base or model_dir.name,
        "parent": base,
    }
