"""Runtime configs for tests: the declared setting defaults, with a test's own values on top."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from bots.settings import Settings
from core.settings import from_settings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def configured(kind: type[T], **given: Any) -> T:
    """``kind`` built from the settings as declared (no environment, no files), then ``given``."""
    return from_settings(kind, Settings.model_construct(), **given)
