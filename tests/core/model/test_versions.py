"""The registry pointer without torch: adapter and full versions alike, promote, rollback, history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.model import versions as reg


def full_version(root: Path, name: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "config.json").write_text("{}")
    return root / name


def adapter_version(root: Path, name: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "adapter_config.json").write_text("{}")
    (root / name / "base.json").write_text(json.dumps({"name": "tiny", "sha256": "ab" * 32}))
    return root / name


def test_adapter_versions_are_versions_and_roll_back_like_full_ones(tmp_path) -> None:
    root = tmp_path / "models"
    full_version(root, "chat-v1")
    adapter_version(root, "lora-v2")
    (root / "runs-not-a-version").mkdir()
    assert reg.versions(root) == ["chat-v1", "lora-v2"]
    assert reg.current(root) is None and reg.rollback_target(root) is None
    assert reg.promote("chat-v1", root) is None
    assert reg.promote("lora-v2", root) == "chat-v1"
    assert reg.rollback_target(root) == "chat-v1"
    assert reg.rollback(root) == "chat-v1" and reg.current(root) == "chat-v1"
    assert [(e["action"], e["version"], e["previous"]) for e in reg.history(root)] == [
        ("promote", "chat-v1", None),
        ("promote", "lora-v2", "chat-v1"),
        ("rollback", "chat-v1", "lora-v2"),
    ]
    with pytest.raises(RuntimeError, match="nothing to roll back to"):
        reg.rollback(root)  # chat-v1 was the first promotion
    with pytest.raises(FileNotFoundError):
        reg.promote("runs-not-a-version", root)


def test_no_rollback_to_a_version_removed_from_disk(tmp_path) -> None:
    root = tmp_path / "models"
    full_version(root, "a")
    adapter_version(root, "b")
    reg.promote("a", root)
    reg.promote("b", root)
    (root / "a" / "config.json").unlink()
    assert reg.rollback_target(root) is None
    with pytest.raises(RuntimeError):
        reg.rollback(root)
    assert reg.current(root) == "b"


def test_a_single_model_directory_is_no_registry(tmp_path) -> None:
    assert reg.versions(full_version(tmp_path, "plain")) == []
    assert reg.versions(tmp_path / "missing") == []


def test_the_pointer_loads_no_torch() -> None:
    code = "import sys, core.model.versions; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
