"""Digital twin: fit a differentiable surrogate to a sweep, report its fidelity, save/load it."""

from quasineuron.surrogate.base import AbstractSurrogate, DomainPolicy
from quasineuron.surrogate.fit import FitResult, fit_surrogate, refine_surrogate, spline_grid
from quasineuron.surrogate.io import load_surrogate, save_surrogate
from quasineuron.surrogate.mlp import MLPSurrogate
from quasineuron.surrogate.plot import plot_fit
from quasineuron.surrogate.report import FitReport
from quasineuron.surrogate.spline import SplineSurrogate

__all__ = [
    "AbstractSurrogate",
    "DomainPolicy",
    "FitReport",
    "FitResult",
    "MLPSurrogate",
    "SplineSurrogate",
    "fit_surrogate",
    "load_surrogate",
    "plot_fit",
    "refine_surrogate",
    "save_surrogate",
    "spline_grid",
]
