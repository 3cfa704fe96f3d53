"""quasineuron: train networks of devices that only approximately behave like neurons.

The pipeline, one stage per sub-package: ``devices`` (describe) → ``sweep`` (characterise) →
``surrogate`` (digital twin) → ``network`` (compose) → ``training`` (train) → ``evaluation``
(validate on the true device) → ``report``.

Submodules load on first use (PEP 562): ``import quasineuron`` costs almost nothing, and
``quasineuron.sweep`` or ``from quasineuron import sweep`` imports the stage (and torch) only
then. This keeps the command line quick for ``--help``, ``devices`` and argument errors.
"""

# ruff: noqa: F401  (this file only re-exports; __all__ is built from the table below)

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from quasineuron._version import __version__

#: Every public name → the module it comes from. The one list of what the package exports:
#: ``__all__``, ``dir()`` and lazy attribute access all read it.
_EXPORTS: dict[str, str] = {
    "__version__": "quasineuron._version",
    "ArrayDataset": "quasineuron.data",
    "load_digits": "quasineuron.data",
    "load_mnist": "quasineuron.data",
    "regression_1d": "quasineuron.data",
    "xor": "quasineuron.data",
    "AbstractDevice": "quasineuron.devices",
    "Adaptive": "quasineuron.devices",
    "almost_neuron": "quasineuron.devices",
    "Anderson": "quasineuron.devices",
    "available_devices": "quasineuron.devices",
    "BlackBoxDevice": "quasineuron.devices",
    "Box": "quasineuron.devices",
    "check_device": "quasineuron.devices",
    "DeviceCheckReport": "quasineuron.devices",
    "Euler": "quasineuron.devices",
    "FinalState": "quasineuron.devices",
    "FixedPointDevice": "quasineuron.devices",
    "FormulaDevice": "quasineuron.devices",
    "Heun": "quasineuron.devices",
    "ideal_neuron": "quasineuron.devices",
    "InputClip": "quasineuron.devices",
    "Noisy": "quasineuron.devices",
    "Integrate": "quasineuron.devices",
    "make_device": "quasineuron.devices",
    "Newton": "quasineuron.devices",
    "BatchedNewton": "quasineuron.devices",
    "DriveTable": "quasineuron.devices",
    "ODEDevice": "quasineuron.devices",
    "raw_almost_neuron": "quasineuron.devices",
    "reaction_relu": "quasineuron.devices",
    "RK4": "quasineuron.devices",
    "smoothed_relu": "quasineuron.devices",
    "solve_reference": "quasineuron.devices",
    "TimeAverage": "quasineuron.devices",
    "TimeIntegral": "quasineuron.devices",
    "wuxing_neuron": "quasineuron.devices",
    "evaluate": "quasineuron.evaluation",
    "EvaluationReport": "quasineuron.evaluation",
    "Dense": "quasineuron.network",
    "DeviceLayer": "quasineuron.network",
    "DeviceNetwork": "quasineuron.network",
    "Direct": "quasineuron.network",
    "FanIn": "quasineuron.network",
    "Linear": "quasineuron.network",
    "load_network": "quasineuron.network",
    "PhysicsAware": "quasineuron.network",
    "Ports": "quasineuron.network",
    "Quadratic": "quasineuron.network",
    "Raw": "quasineuron.network",
    "save_network": "quasineuron.network",
    "Sparse": "quasineuron.network",
    "Surrogate": "quasineuron.network",
    "TrueDevice": "quasineuron.network",
    "TwoDrive": "quasineuron.network",
    "Variability": "quasineuron.network",
    "fit_surrogate": "quasineuron.surrogate",
    "FitReport": "quasineuron.surrogate",
    "FitResult": "quasineuron.surrogate",
    "load_surrogate": "quasineuron.surrogate",
    "MLPSurrogate": "quasineuron.surrogate",
    "refine_surrogate": "quasineuron.surrogate",
    "recharacterize": "quasineuron.surrogate.active",
    "save_surrogate": "quasineuron.surrogate",
    "SplineSurrogate": "quasineuron.surrogate",
    "evaluate_points": "quasineuron.sweep",
    "Grid": "quasineuron.sweep",
    "LatinHypercube": "quasineuron.sweep",
    "load_measurements": "quasineuron.sweep",
    "PointStatus": "quasineuron.sweep",
    "ProcessExecutor": "quasineuron.sweep",
    "Random": "quasineuron.sweep",
    "SerialExecutor": "quasineuron.sweep",
    "Sobol": "quasineuron.sweep",
    "sweep": "quasineuron.sweep",
    "SweepTable": "quasineuron.sweep",
    "DaskExecutor": "quasineuron.sweep.dask",
    "Adam": "quasineuron.training",
    "CMAES": "quasineuron.training",
    "Cosine": "quasineuron.training",
    "CrossEntropy": "quasineuron.training",
    "Delta": "quasineuron.training",
    "DifferentialEvolution": "quasineuron.training",
    "ErrorPolynomial": "quasineuron.training",
    "MSE": "quasineuron.training",
    "NelderMead": "quasineuron.training",
    "optimize_weights": "quasineuron.training",
    "Perceptron": "quasineuron.training",
    "SGD": "quasineuron.training",
    "train": "quasineuron.training",
    "train_local": "quasineuron.training",
    "TrainResult": "quasineuron.training",
    "fit": "quasineuron.training",
    "Gradient": "quasineuron.training",
    "LocalRule": "quasineuron.training",
    "Population": "quasineuron.training",
    "Callback": "quasineuron.training",
    "WeightAveraging": "quasineuron.training",
    "DomainMonitor": "quasineuron.training",
    "AntColony": "quasineuron.training.derivative_free",
    "ParticleSwarm": "quasineuron.training.derivative_free",
    "train_distributed": "quasineuron.training.distributed",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # static type checkers see the real objects; a test keeps this in step
    from quasineuron.data import ArrayDataset, load_digits, load_mnist, regression_1d, xor
    from quasineuron.devices import (
        RK4,
        AbstractDevice,
        Adaptive,
        Anderson,
        BatchedNewton,
        BlackBoxDevice,
        Box,
        DeviceCheckReport,
        DriveTable,
        Euler,
        FinalState,
        FixedPointDevice,
        FormulaDevice,
        Heun,
        InputClip,
        Integrate,
        Newton,
        Noisy,
        ODEDevice,
        TimeAverage,
        TimeIntegral,
        almost_neuron,
        available_devices,
        check_device,
        ideal_neuron,
        make_device,
        raw_almost_neuron,
        reaction_relu,
        smoothed_relu,
        solve_reference,
        wuxing_neuron,
    )
    from quasineuron.evaluation import EvaluationReport, evaluate
    from quasineuron.network import (
        Dense,
        DeviceLayer,
        DeviceNetwork,
        Direct,
        FanIn,
        Linear,
        PhysicsAware,
        Ports,
        Quadratic,
        Raw,
        Sparse,
        Surrogate,
        TrueDevice,
        TwoDrive,
        Variability,
        load_network,
        save_network,
    )
    from quasineuron.surrogate import (
        FitReport,
        FitResult,
        MLPSurrogate,
        SplineSurrogate,
        fit_surrogate,
        load_surrogate,
        refine_surrogate,
        save_surrogate,
    )
    from quasineuron.surrogate.active import recharacterize
    from quasineuron.sweep import (
        Grid,
        LatinHypercube,
        PointStatus,
        ProcessExecutor,
        Random,
        SerialExecutor,
        Sobol,
        SweepTable,
        evaluate_points,
        load_measurements,
        sweep,
    )
    from quasineuron.sweep.dask import DaskExecutor
    from quasineuron.training import (
        CMAES,
        MSE,
        SGD,
        Adam,
        Callback,
        Cosine,
        CrossEntropy,
        Delta,
        DifferentialEvolution,
        DomainMonitor,
        ErrorPolynomial,
        Gradient,
        LocalRule,
        NelderMead,
        Perceptron,
        Population,
        TrainResult,
        WeightAveraging,
        fit,
        optimize_weights,
        train,
        train_local,
    )
    from quasineuron.training.derivative_free import AntColony, ParticleSwarm
    from quasineuron.training.distributed import train_distributed


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first access and cache the object."""
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'quasineuron' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    """The public names and the module's own attributes, loaded or not."""
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """This package's module type: a sub-package never shadows the function of its name.

    Importing ``quasineuron.sweep`` (from anywhere) makes the import system set the attribute
    ``quasineuron.sweep`` to the sub-package; ``qn.sweep`` must stay the function, as it was
    when this file imported everything eagerly. So that one assignment is dropped, and the
    name resolves through ``__getattr__`` to the exported object.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if (
            isinstance(value, types.ModuleType)
            and value.__name__ == f"{__name__}.{name}"
            and name in _EXPORTS
        ):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
