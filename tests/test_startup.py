"""The package and the command line start without importing what they do not use."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import quasineuron as qn
from quasineuron._device_names import BUILTIN_NAMES, device_names

INIT = Path(qn.__file__)


def _modules_after(code: str, tmp_path: Path) -> set[str]:
    """Run ``code`` in a fresh interpreter; return the names in its ``sys.modules``."""
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))\n"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def _cli(argv: list[str]) -> str:
    # main() may exit through SystemExit (--help, argument errors); the modules are what count
    return (
        "from quasineuron.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["devices"],
        ["characterize", "tanh", "--workers", "-1", "--out", "x"],  # an argument error
        ["run", "missing.toml", "--out", "x"],  # a config error
    ],
    ids=["help", "devices", "argument-error", "config-error"],
)
def test_cli_does_not_import_torch(argv, tmp_path):
    modules = _modules_after(_cli(argv), tmp_path)
    assert "quasineuron.cli" in modules
    assert "torch" not in modules, f"quasineuron {' '.join(argv)} imported torch"


def test_import_quasineuron_is_lazy(tmp_path):
    modules = _modules_after("import quasineuron\nprint(quasineuron.__version__)", tmp_path)
    assert "torch" not in modules
    assert "quasineuron.sweep" not in modules


def test_devices_lists_the_library_names():
    from quasineuron.devices import library

    assert set(BUILTIN_NAMES) == set(library._BUILTINS)
    assert device_names() == qn.available_devices()


def test_every_public_name_resolves():
    missing = [name for name in qn.__all__ if not hasattr(qn, name)]
    assert missing == []
    assert set(qn.__all__) <= set(dir(qn))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = qn.not_a_name


def test_export_table_all_and_type_checking_imports_agree():
    assert len(qn.__all__) == len(set(qn.__all__))
    assert set(qn.__all__) == set(qn._EXPORTS)
    for name, module in qn._EXPORTS.items():
        assert getattr(sys.modules[module], name) is getattr(qn, name), name
    # the imports that static type checkers read name the same objects from the same modules
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
    )
    static = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert static == {k: v for k, v in qn._EXPORTS.items() if k != "__version__"}


def test_the_import_systems_assignment_never_shadows_a_function():
    # importing a sub-package sets the parent's attribute of that name to the module
    fn = qn.sweep
    try:
        qn.sweep = sys.modules["quasineuron.sweep"]
        assert qn.sweep is fn
    finally:
        qn.__dict__["sweep"] = fn


@pytest.mark.slow  # a fresh interpreter importing torch: 3 to 8 s on 2 busy cores
def test_a_subpackage_import_never_shadows_its_function(tmp_path):
    code = (
        "import quasineuron.sweep.runner\n"
        "import quasineuron as qn\n"
        "assert callable(qn.sweep), qn.sweep\n"
        "from quasineuron import sweep\n"
        "assert callable(sweep), sweep\n"
    )
    _modules_after(code, tmp_path)
