"""Evaluation: accuracy per execution mode on held-out data, and the twin-to-device gap."""

from quasineuron.evaluation.evaluate import EvaluationReport, evaluate, mode_name

__all__ = ["EvaluationReport", "evaluate", "mode_name"]
