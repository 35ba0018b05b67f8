"""The README stays true: every setting is documented, and the quick start matches the Makefile."""

from __future__ import annotations

from pathlib import Path

from bots.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in README]
    assert missing == []


def test_quick_start_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run:", "test:", "test-fast:", "lint:", "bench:"):
        assert f"\n{target}" in makefile
