"""Packaging: the conda and pip dependency lists agree, and CI runs the README's command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge's name -> PyPI's name
NOT_PACKAGES = {"python", "pip"}     # conda lists the interpreter and pip itself
REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$")


def _split(requirement: str) -> tuple[str, str]:
    """``"numpy >= 1.24"`` -> ``("numpy", ">=1.24")``; names normalised as pip does."""
    name, spec = REQ.match(requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower(), spec.replace(" ", "")


def _conda_requirements() -> dict[str, str]:
    """Every ``- requirement`` under ``dependencies:`` (and its ``pip:`` list), comments stripped."""
    reqs: dict[str, str] = {}
    in_deps = False
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith((" ", "-")):
            in_deps = line.startswith("dependencies:")
            continue
        item = line.strip()
        if in_deps and item.startswith("- ") and not item.endswith(":"):
            name, spec = _split(item[2:])
            if name not in NOT_PACKAGES:
                reqs[CONDA_TO_PIP.get(name, name)] = spec
    return reqs


def _pip_requirements() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(_split(r) for r in reqs)


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    conda, pip = _conda_requirements(), _pip_requirements()
    assert "torch" in conda and "pytest" in conda and "playwright" in conda  # the parser found them
    assert sorted(conda) == sorted(pip), (
        f"only in environment.yml: {sorted(set(conda) - set(pip))}; "
        f"only in pyproject.toml: {sorted(set(pip) - set(conda))}")
    assert conda == pip, "same packages, different version bounds"


def test_ci_runs_the_documented_test_command():
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & 0o111, ".ci/run must be executable"
    commands = [line.strip() for line in script.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in commands


def test_checkpoints_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"checkpoints/*.pt", "checkpoints/*.json"} <= set(package_data["prunekit"])
