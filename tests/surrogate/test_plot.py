from __future__ import annotations

import matplotlib
import pytest

from quasineuron.surrogate import fit_surrogate, plot_fit


@pytest.mark.slow
def test_plots_1d_and_2d(tanh_table, almost_table, almost_neuron, tmp_path):
    backend = matplotlib.get_backend()
    twin1 = fit_surrogate(tanh_table, kind="spline").model
    paths = plot_fit(twin1, tanh_table, tmp_path / "one")
    twin2 = fit_surrogate(almost_table, kind="spline").model
    paths += plot_fit(
        twin2, almost_table, tmp_path / "two", true_device=almost_neuron, resolution=31
    )
    paths += plot_fit(twin2, almost_table, tmp_path / "scatter")
    assert [p.name for p in paths] == ["response.png", "error.png"] * 3
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend
