"""CI: the tiny preset through every stage from the CLI, then served by core."""

import asyncio
import json
import math

import pytest
from typer.testing import CliRunner

from tests.configs import configured
from training.cli import app
from training.evaluation.evaluate import PROMPTS


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tmp_path):
    runner = CliRunner()
    dirs = [
        "--work-dir",
        str(tmp_path / "data"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--models-dir",
        str(tmp_path / "models"),
    ]
    result = runner.invoke(app, ["all", "-c", "training/configs/tiny.toml", *dirs])
    assert result.exit_code == 0, result.output + repr(result.exception)

    models = tmp_path / "models"
    version = (models / "current").read_text().strip()
    ev = json.loads((models / version / "eval.json").read_text())
    lm = ev["language_model"]
    assert set(lm) == {"model", "kneser_ney_3gram"}
    assert all(math.isfinite(v["bits_per_byte"]) and v["ppl"] > 1 for v in lm.values())
    assert {"model", "tfidf_retrieval"} <= set(ev["replies"]) and ev["pairs"] > 0
    assert len(ev["transcript"]) == len(PROMPTS)
    report = json.loads((tmp_path / "data" / "clean" / "report.json").read_text())
    assert report["splits"]["test"]["conversations"] > 0
    assert (tmp_path / "runs" / "pretrain" / "loss.png").exists()

    # Every stage is idempotent: a second run reuses every output and registers nothing new.
    again = runner.invoke(app, ["all", "-c", "training/configs/tiny.toml", *dirs])
    assert again.exit_code == 0 and "pretrain: " in again.output and "is up to date" in again.output
    assert "already registered" in again.output
    assert [p.name for p in models.iterdir() if p.is_dir()] == [version]

    # Continued pretraining starts from the registered weights, not from a random init.
    more = runner.invoke(
        app,
        [
            "pretrain", "-c", "training/configs/tiny.toml",
            "--set", f"work_dir={tmp_path / 'data'}",
            "--set", f"init={models / version}",
            "--set", f"out_dir={tmp_path / 'runs' / 'more'}",
            "--set", "max_steps=3",
        ],
    )  # fmt: skip
    assert more.exit_code == 0, more.output + repr(more.exception)
    first = json.loads((tmp_path / "runs" / "pretrain" / "history.json").read_text())["history"][0][1]
    cont = json.loads((tmp_path / "runs" / "more" / "history.json").read_text())["history"][0][1]
    assert cont < first - 1.0, (cont, first)

    from core.model.huggingface import DecodingConfig, TransformersBackend
    from core.model.scoring import Reranker
    from core.types import Role, Turn

    backend = TransformersBackend(
        models, Reranker([]), configured(DecodingConfig, max_new_tokens=12, num_beams=2, num_candidates=2)
    )
    assert backend.model_dir.name == (models / "current").read_text().strip()
    candidates = asyncio.run(backend.generate([Turn(Role.USER, "hi! how are you today?")]))
    assert candidates and all(isinstance(c.text, str) and math.isfinite(c.logprob) for c in candidates)

    listed = runner.invoke(app, ["list", "--models-dir", str(models)])
    assert listed.output.strip() == f"* {version}"
    rolled = runner.invoke(app, ["rollback", "--models-dir", str(models)])
    assert rolled.exit_code == 1 and "nothing to roll back" in rolled.output
