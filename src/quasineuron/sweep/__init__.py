"""Characterise a device: sample its domain, evaluate it resumably, keep a per-point table."""

from quasineuron.sweep.dask import DaskExecutor as DaskExecutor
from quasineuron.sweep.executors import AbstractExecutor, ProcessExecutor, SerialExecutor
from quasineuron.sweep.measured import MeasuredOnly, load_measurements
from quasineuron.sweep.runner import evaluate_points, sweep
from quasineuron.sweep.sampling import (
    AbstractSampler,
    Grid,
    LatinHypercube,
    Random,
    Repeated,
    Sobol,
)
from quasineuron.sweep.store import PointStatus, SweepStore, SweepTable

__all__ = [
    "AbstractExecutor",
    "AbstractSampler",
    "Grid",
    "LatinHypercube",
    "PointStatus",
    "ProcessExecutor",
    "Random",
    "Repeated",
    "SerialExecutor",
    "Sobol",
    "SweepStore",
    "SweepTable",
    "evaluate_points",
    "sweep",
    "MeasuredOnly",
    "load_measurements",
]
