"""Base model for config sections. Kept apart from ``config`` so feature modules can import it
without a cycle (``config`` imports every feature's section)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
