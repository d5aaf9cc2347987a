"""The base of every layer's configuration: a frozen, validated model that forbids unknown keys.

Each processing layer keeps its configuration beside its algorithm (``isr.IsrConfig``,
``background.BackgroundConfig``, ...); the pipeline's TOML file has one table per config.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["LayerConfig"]


class LayerConfig(BaseModel):
    """A frozen set of options; ``replace(**changes)`` gives a validated copy.

    Examples
    --------
    >>> from photocalib.background import BackgroundConfig
    >>> BackgroundConfig(mesh_size=32).replace(order=2).order
    2
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def replace(self, **changes) -> LayerConfig:
        """A copy with some options changed, validated again (InputError-free: pydantic raises
        ``ValidationError``, a ``ValueError``, naming the option)."""
        return type(self).model_validate({**self.model_dump(), **changes})
