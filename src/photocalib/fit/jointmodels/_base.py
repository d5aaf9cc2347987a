"""The interface every joint model implements, and the registry of models by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ...errors import InputError
from .._joint_model import Block, cheb_means

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .._joint_problem import Problem

_REGISTRY: dict[str, type[JointModel]] = {}


class JointModel:
    """A family of joint calibration models: ``c = Π factors``, each a Chebyshev block.

    Subclasses set the class attributes and implement :meth:`blocks` and :meth:`constraints`;
    they are configured by the :class:`~photocalib.fit.joint.JointCalibrator` they are given
    (its orders and switches).

    Attributes
    ----------
    name : str
        What ``fit_joint(model=...)`` calls it.
    detector_block, detector_group : str
        Name of the per-detector factor's block, and what indexes it (``"epoch_detector"``: one
        per detector and epoch; ``"detector"``: one per detector).
    visit_block : str
        Name of the per-visit factor's block (its constant is the visit's grey level).
    pixel_area : bool
        The WCS pixel area is a known factor of surface-brightness calibrations (else the fit
        absorbs the Jacobian).
    needs_reference : bool
        A reference catalogue is required.
    reference_in_chi2 : bool
        Reference fluxes are measurements in χ²; otherwise they only fix the absolute level after
        the fit (the zero-point constraint fixes it during the fit).
    """

    name: ClassVar[str]
    detector_block: ClassVar[str]
    detector_group: ClassVar[str]
    visit_block: ClassVar[str]
    pixel_area: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True
    reference_in_chi2: ClassVar[bool] = True

    def __init__(self, config) -> None:
        self.config = config

    def validate(self) -> None:
        """Refuse configurations this model cannot fit (raise InputError)."""

    def blocks(self, n_epdet: int, n_det: int, n_visit: int, has_colour: bool) -> list[Block]:
        """The factors, in parameter order, for these numbers of groups."""
        raise NotImplementedError

    def constraints(self, prob: Problem) -> tuple[list[np.ndarray], list[float]]:
        """Rows ``C`` and targets ``t`` of the exact constraints ``C p = t``."""
        raise NotImplementedError

    def initial_levels(self, grey: np.ndarray) -> np.ndarray:
        """Starting grey levels per visit from the robust start (a model may renormalise)."""
        return grey

    def n_params(self, which: str) -> int:
        """Coefficients of one group of the visit (``"visit"``) or detector (``"detector"``) factor."""
        blocks = self.blocks(1, 1, 1, True)
        name = self.visit_block if which == "visit" else self.detector_block
        return next(b.n_basis for b in blocks if b.name == name)

    @staticmethod
    def stack(*specs: tuple[str, str, int, str, float, int]) -> list[Block]:
        """Blocks from ``(name, coord, order, group, base, n_groups)``, offsets assigned in order."""
        out, offset = [], 0
        for spec in specs:
            b = Block(*spec, offset)
            offset += b.n_params
            out.append(b)
        return out


def mean_of_groups(n_p: int, b: Block, groups) -> np.ndarray:
    """Constraint row: the mean over ``groups`` of a block's field means (each field's mean over
    its box is linear in its coefficients)."""
    r = np.zeros(n_p)
    groups = list(groups)
    means = cheb_means(b.order) / len(groups)
    for g in groups:
        r[b.offset + g * b.n_basis: b.offset + (g + 1) * b.n_basis] = means
    return r


def register(cls: type[JointModel]) -> type[JointModel]:
    """Class decorator: make a model available to ``fit_joint`` under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[JointModel]:
    """The model class registered as ``name``.

    Raises
    ------
    InputError
        For an unknown name (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown joint model {name!r}; use one of {', '.join(names())}") from None


def names() -> tuple[str, ...]:
    """Names of the registered models, in registration order."""
    return tuple(_REGISTRY)
