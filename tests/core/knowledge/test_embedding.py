"""The packaged MiniLM loads offline and embeds exactly as sentence-transformers does."""

from __future__ import annotations

import numpy as np

from core.knowledge.embedding import Embedder, packaged_model_dir


def test_same_vectors_as_sentence_transformers(real_embedder) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["How do I connect the bot to Telegram?", "Set TELEGRAM_BOT_TOKEN from @BotFather.", ""]
    ours = real_embedder.embed(texts)
    reference = SentenceTransformer(str(packaged_model_dir()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert ours.shape == (3, 384) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert isinstance(real_embedder, Embedder) and real_embedder.dim == 384
    assert (packaged_model_dir() / "model.safetensors").exists()


def test_importing_the_knowledge_base_loads_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, core.knowledge; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
