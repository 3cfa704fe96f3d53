"""Evaluation: accuracy per execution mode on held-out data, and the twin-to-device gap."""

from quasineuron.evaluation.evaluate import EvaluationReport, evaluate, is_stochastic, mode_name

__all__ = ["EvaluationReport", "evaluate", "is_stochastic", "mode_name"]
