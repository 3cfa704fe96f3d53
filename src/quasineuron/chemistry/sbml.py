"""SBML export/import of reaction networks (python-libsbml), and simulation by libroadrunner.

Export writes an SBML Level 3 Version 2 model with one compartment ``cell`` of size ``volume``;
species carry initial concentrations (``hasOnlySubstanceUnits="false"``), boundary species are
``boundaryCondition="true"`` and ``constant="true"``; every reaction is irreversible with the
mass-action kinetic law ``cell * k * ∏ reactant^order`` and a local parameter ``k``. The
compartment factor makes the law an amount per time, so with ``volume = Ω`` a stochastic
simulation (Gillespie) sees molecule counts ``n = Ω·x`` and propensities
``k ∏ n^order / Ω^(order−1)`` (so ``2X → X`` fires at ``k n²/Ω``, the law as written, not the
combinatorial ``k n(n−1)/Ω``; both have the concentration ODE as mean-field limit). For the SSA,
:func:`roadrunner_simulate` rounds floating species' initial counts to whole molecules.

Both libraries are optional (``pip install python-libsbml libroadrunner``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from quasineuron.chemistry.network import Reaction, ReactionNetwork, Species

__all__ = ["from_sbml", "roadrunner_simulate", "sbml_errors", "to_sbml"]

_COMPARTMENT = "cell"


def _libsbml():
    try:
        import libsbml
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "SBML export/import needs python-libsbml: pip install python-libsbml"
        ) from err
    return libsbml


def _check(code: int, what: str) -> None:
    lib = _libsbml()
    if code != lib.LIBSBML_OPERATION_SUCCESS:
        raise RuntimeError(f"libsbml failed to {what}: {lib.OperationReturnValue_toString(code)}")


def _law(r: Reaction) -> str:
    terms = [_COMPARTMENT, "k"]
    terms += [name if c == 1 else f"{name}^{c}" for name, c in r.reactants]
    return " * ".join(terms)


def to_sbml(network: ReactionNetwork, *, volume: float = 1.0) -> str:
    """Serialise ``network`` as an SBML Level 3 Version 2 document.

    Args:
        network: The reaction network.
        volume: Size of the single compartment (Ω; molecule counts are ``Ω·x``).

    Returns:
        The SBML document as an XML string.
    """
    lib = _libsbml()
    if not volume > 0:
        raise ValueError(f"volume must be > 0, got {volume!r}")
    doc = lib.SBMLDocument(3, 2)
    model = doc.createModel()
    _check(model.setId(network.name), "set the model id")
    comp = model.createCompartment()
    _check(comp.setId(_COMPARTMENT), "create the compartment")
    comp.setSize(float(volume))
    comp.setConstant(True)
    comp.setSpatialDimensions(3)
    for s in network.species:
        sp = model.createSpecies()
        _check(sp.setId(s.name), f"create species {s.name}")
        sp.setCompartment(_COMPARTMENT)
        sp.setInitialConcentration(float(s.initial))
        sp.setHasOnlySubstanceUnits(False)
        sp.setBoundaryCondition(s.boundary)
        sp.setConstant(s.boundary)
    for n, r in enumerate(network.reactions):
        rx = model.createReaction()
        _check(rx.setId(r.name or f"r{n}"), f"create reaction {r.name or n}")
        rx.setReversible(False)
        for name, c in r.reactants:
            ref = rx.createReactant()
            ref.setSpecies(name)
            ref.setStoichiometry(float(c))
            ref.setConstant(True)
        for name, c in r.products:
            ref = rx.createProduct()
            ref.setSpecies(name)
            ref.setStoichiometry(float(c))
            ref.setConstant(True)
        law = rx.createKineticLaw()
        k = law.createLocalParameter()
        k.setId("k")
        k.setValue(r.rate)
        _check(law.setMath(lib.parseL3Formula(_law(r))), f"set the rate law of {rx.getId()}")
    return lib.writeSBMLToString(doc)


def sbml_errors(text: str) -> list[str]:
    """Errors (severity error or fatal) from libsbml's reading and consistency checks.

    Unit-consistency checks are switched off: the model carries no units.

    Args:
        text: An SBML document.

    Returns:
        One message per error; empty when the document is valid and consistent.
    """
    lib = _libsbml()
    doc = lib.readSBMLFromString(text)
    doc.setConsistencyChecks(lib.LIBSBML_CAT_UNITS_CONSISTENCY, False)
    doc.checkConsistency()
    out = []
    for i in range(doc.getNumErrors()):
        e = doc.getError(i)
        if e.getSeverity() >= lib.LIBSBML_SEV_ERROR:
            out.append(f"line {e.getLine()}: {e.getMessage().strip()}")
    return out


def from_sbml(text: str) -> ReactionNetwork:
    """Read a network written by :func:`to_sbml` (mass-action laws only).

    Args:
        text: An SBML document.

    Returns:
        The reaction network (reaction names are the SBML reaction ids).

    Raises:
        ValueError: If the document has errors or a kinetic law is not
            ``compartment * k * ∏ reactant^order``.
    """
    lib = _libsbml()
    errors = sbml_errors(text)
    if errors:
        raise ValueError("invalid SBML: " + "; ".join(errors[:5]))
    doc = lib.readSBMLFromString(text)
    model = doc.getModel()
    if model.getNumCompartments() != 1:
        raise ValueError("only single-compartment models are supported")
    comp = model.getCompartment(0).getId()
    species = []
    for i in range(model.getNumSpecies()):
        sp = model.getSpecies(i)
        if sp.isSetInitialConcentration():
            x0 = sp.getInitialConcentration()
        else:
            x0 = sp.getInitialAmount() / model.getCompartment(0).getSize()
        species.append(Species(sp.getId(), float(x0), boundary=bool(sp.getBoundaryCondition())))
    reactions = []
    for i in range(model.getNumReactions()):
        rx = model.getReaction(i)
        if rx.getReversible():
            raise ValueError(f"reaction {rx.getId()} is reversible; split it into two")
        reac = tuple(
            (rx.getReactant(j).getSpecies(), int(rx.getReactant(j).getStoichiometry()))
            for j in range(rx.getNumReactants())
        )
        prod = tuple(
            (rx.getProduct(j).getSpecies(), int(rx.getProduct(j).getStoichiometry()))
            for j in range(rx.getNumProducts())
        )
        law = rx.getKineticLaw()
        if law is None or law.getNumLocalParameters() != 1:
            raise ValueError(f"reaction {rx.getId()}: expected one local rate parameter")
        k = law.getLocalParameter(0)
        r = Reaction(reac, prod, float(k.getValue()), rx.getId())
        expected = _law(r).replace("k", k.getId(), 1).replace(_COMPARTMENT, comp, 1)
        got = lib.formulaToL3String(law.getMath())
        if got != lib.formulaToL3String(lib.parseL3Formula(expected)):
            raise ValueError(
                f"reaction {rx.getId()}: kinetic law {got!r} is not mass action {expected!r}"
            )
        reactions.append(r)
    return ReactionNetwork(tuple(species), tuple(reactions), model.getId() or "reaction_network")


def _integer_counts(text: str) -> str:
    """Round every floating species' initial count ``Ω·x0`` to a whole number of molecules.

    libroadrunner's Gillespie integrator starts from the document's amounts as they are and
    moves them by whole stoichiometries, so a fractional start such as ``Ω·√ε = 2.236`` stays
    fractional forever, and a reaction that consumes the last 0.236 molecule (whose propensity
    is still positive) leaves a negative count. Boundary species are left exact: they are
    held constant and only scale propensities.
    """
    lib = _libsbml()
    doc = lib.readSBMLFromString(text)
    model = doc.getModel()
    for i in range(model.getNumSpecies()):
        sp = model.getSpecies(i)
        if sp.getBoundaryCondition():
            continue
        vol = model.getCompartment(sp.getCompartment()).getSize()
        if sp.isSetInitialConcentration():
            n = round(sp.getInitialConcentration() * vol)
            _check(sp.setInitialConcentration(n / vol), f"round the count of {sp.getId()}")
        elif sp.isSetInitialAmount():
            _check(sp.setInitialAmount(float(round(sp.getInitialAmount()))), "round a count")
    return lib.writeSBMLToString(doc)


def roadrunner_simulate(
    text: str,
    *,
    t_end: float,
    integrator: str = "cvode",
    seed: int = 0,
    n_points: int = 2,
    selections: Sequence[str] | None = None,
    tol: float = 1e-12,
) -> np.ndarray:
    """Simulate an SBML model with libroadrunner and return the trajectory of ``selections``.

    Initial concentrations (inputs included) are those in the document; build the network
    with the wanted values (``dataclasses.replace`` on its species) before :func:`to_sbml`.

    Args:
        text: SBML document.
        t_end: End time.
        integrator: ``"cvode"`` (deterministic, stiff) or ``"gillespie"`` (stochastic SSA;
            floating species start from ``round(Ω·x0)`` molecules, boundary species stay
            exact and constant).
        seed: Seed of the Gillespie integrator.
        n_points: Number of output times in [0, t_end].
        selections: Species ids to record (default: all floating species).
        tol: Relative and absolute tolerance of CVODE.

    Returns:
        Array (n_points, len(selections)) of concentrations (Gillespie: counts / Ω).
    """
    try:
        import roadrunner
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "simulation of SBML needs libroadrunner: pip install libroadrunner"
        ) from err
    if integrator == "gillespie":
        text = _integer_counts(text)
    rr = roadrunner.RoadRunner(text)
    rr.setIntegrator(integrator)
    if integrator == "cvode":
        rr.integrator.relative_tolerance = tol
        rr.integrator.absolute_tolerance = tol
    else:
        rr.integrator.seed = int(seed)
        rr.integrator.variable_step_size = False
    ids = list(selections) if selections is not None else list(rr.model.getFloatingSpeciesIds())
    rr.timeCourseSelections = [f"[{i}]" for i in ids]
    return np.asarray(rr.simulate(0.0, float(t_end), int(n_points)))
