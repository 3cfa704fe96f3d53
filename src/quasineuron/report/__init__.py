"""Report: metrics as JSON, plots as PNG, a short Markdown summary."""

from quasineuron.report.io import write_json
from quasineuron.report.plots import plot_accuracy_per_mode, plot_confusion, plot_training_curves

__all__ = ["plot_accuracy_per_mode", "plot_confusion", "plot_training_curves", "write_json"]
