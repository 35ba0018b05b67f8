"""The counterfactual fairness report on a real (tiny) model: every axis and group is measured."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from training.cli import app
from training.evaluation.counterfactual import PAIRS


def test_bias_report_covers_every_group(tiny_model_dir, tmp_path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bias",
            "--set",
            f"model={tiny_model_dir}",
            "--set",
            f"out_dir={tmp_path}",
            "--set",
            "max_new_tokens=4",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bias.json").read_text())
    for axis, templates in PAIRS.items():
        assert set(report[axis]["groups"]) == set(templates[0][1])
        assert report[axis]["score_gap"] >= 0
        for stats in report[axis]["groups"].values():
            assert stats["mean_logprob"] < 0 and 0 <= stats["safety_block_rate"] <= 1
    assert "| dialect | informal |" in (tmp_path / "bias.md").read_text()
