"""The house's floors (docs/architecture.md): imports only run down, and a config loads without jax.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).parent.parent / "fsjax"
FLOORS = ("config", "nn", "models", "optim", "data", "checkpoint", "interop", "losses",
          "training", "tools")
"""From the ground up: a folder may import its own modules and those of the floors before it."""


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "fsjax" or len(parts) < 2:
        return None
    return "tools" if parts[1] == "train" else parts[1]  # the entry point is a command line


def _imports(path: pathlib.Path) -> set[str]:
    """Every fsjax module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("fsjax.")}


def _uphill() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        room = _room(module)
        if room not in FLOORS:
            continue
        for name in _imports(path):
            target = _room(name)
            if target in FLOORS and FLOORS.index(target) > FLOORS.index(room):
                wrong.append(f"{module} imports {name} ({room} -> {target})")
    return sorted(set(wrong))


def test_imports_only_run_down_the_floors():
    assert _uphill() == []
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert rooms == set(FLOORS)


def test_the_check_sees_an_import_that_runs_up(tmp_path, monkeypatch):
    bad = tmp_path / "fsjax" / "config"
    bad.mkdir(parents=True)
    (bad / "x.py").write_text("def f():\n    from fsjax.losses import lpips\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "fsjax")
    assert _uphill() == ["fsjax.config.x imports fsjax.losses (config -> losses)",
                         "fsjax.config.x imports fsjax.losses.lpips (config -> losses)"]


@pytest.mark.parametrize("module", ["fsjax.config", "fsjax.config.faceswap_state",
                                    "fsjax.config.switches", "fsjax.models"])
def test_configs_and_the_plugin_list_load_without_jax(module):
    code = (f"import sys, {module}, fsjax.config as c; c.ExperimentConfig(); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('jax', 'jaxlib', 'flax', 'optax', 'numpy')); print(heavy); assert not heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
