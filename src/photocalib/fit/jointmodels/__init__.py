"""The joint calibration's model families, one file each, found by name in a registry.

A model says which factors the calibration is made of (:class:`~photocalib.fit._joint_model.Block`
lists), which exact linear constraints remove its degeneracies, whether the WCS pixel area is a
known factor, and how a reference catalogue enters. Everything else (reading the observations,
the shared focal-plane frame, the solver, the solution and its PhotoCalibs) is common.

To add a model, add one module to this package defining a :class:`JointModel` subclass decorated
with :func:`register`, and name it in the import line below (plain imports: a broken model fails
at import with its real error); ``fit_joint(..., model="<its name>")`` then finds it.

Examples
--------
>>> from photocalib.fit import jointmodels
>>> sorted(jointmodels.names())
['monolithic', 'reference-free', 'separated']
>>> jointmodels.get("separated").pixel_area
True
"""

from __future__ import annotations

from ._base import JointModel, mean_of_groups, register
from ._base import get as get
from ._base import names as names

__all__ = ["JointModel", "get", "mean_of_groups", "names", "register"]

# the models, registered as they are imported (in the order MODELS lists them)
from . import separated  # noqa: E402, F401, I001
from . import monolithic  # noqa: E402, F401
from . import reference_free  # noqa: E402, F401
