"""The few exception and warning classes of quasineuron.

Each subclasses a builtin so that callers can catch either the specific class or the
builtin it refines.
"""

from __future__ import annotations


class QuasineuronWarning(UserWarning):
    """Base class of every warning quasineuron emits."""


class OutOfDomainWarning(QuasineuronWarning):
    """Drives fell outside the domain a surrogate was characterised on."""


class NonFiniteOutputWarning(QuasineuronWarning):
    """A network gave inf/NaN outputs for some rows; those rows were scored as wrong."""


class DeviceContractError(TypeError):
    """A device's probe call returned the wrong shape, dtype or torch device."""


class NotDifferentiableError(TypeError):
    """A gradient strategy needs gradients the device cannot give.

    Use ``PhysicsAware`` (true device forward, surrogate backward) or a derivative-free
    optimiser such as ``CMAES`` instead.
    """


class SimulationError(RuntimeError):
    """A device simulation failed: divergence, a solver failure or non-finite output."""


class SolverError(SimulationError):
    """An ODE solver failed in a way the user must act on, e.g. an adjoint backward solve.

    The message names the device, the solver and its tolerances, and the alternatives (a
    fixed-step solver, ``adjoint=False``, other tolerances, training through a twin).
    """


class UntrustedCodeError(ValueError):
    """A device spec names code that was not allowed to run.

    A ``module:attribute`` spec runs only when its top-level package was allowed explicitly
    (``--allow-import PKG`` on the command line, ``allow_import=("PKG",)`` in Python).
    """


class RunFolderError(ValueError):
    """An output folder holds another run (or other files) and would be overwritten."""


class NotReproducibleError(RunFolderError):
    """A committed result records why it cannot be run again (its ``reproduce.json``)."""


class StoreMismatchError(ValueError):
    """An on-disk sweep store was made for another device, domain or sampler."""


class StoreCorruptError(RuntimeError):
    """An on-disk store cannot be read back consistently."""


class OutOfDomainError(ValueError):
    """Drives fell outside a surrogate's characterised domain under ``policy='raise'``."""


class IntegrityError(StoreCorruptError):
    """A file quasineuron wrote fails its checksum or cannot be parsed: it was damaged.

    The message names the file and what to do (usually: delete it and run the step again).
    """


class SimulatorNotFoundError(RuntimeError):
    """An external simulator a device needs (such as ngspice) is not installed.

    The message names the program that was looked for and the command that installs it.
    """


class DeviceCallError(SimulationError):
    """A call to a device elsewhere (a server, an instrument) failed after all its retries."""


class DeviceBudgetError(RuntimeError):
    """A device elsewhere would be called more times than its budget of calls allows."""


class NoTrueDeviceError(RuntimeError):
    """A device known only from measurements was asked to run: there is no true device."""
