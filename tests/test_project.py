"""The project's set-up files agree with each other and with the README."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch-cpu": "torch"}
NOT_PYTHON_PACKAGES = {"python", "pip"}


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    pins = {}
    for req in reqs:
        name, sep, version = req.partition("==")
        assert sep, f"pyproject.toml: {req!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


def _conda_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # the pip: section
            continue
        name, _, version = dep.partition("=")
        name = CONDA_TO_PYPI.get(name, name)
        if name not in NOT_PYTHON_PACKAGES:
            pins[name.lower()] = version
    return pins


def test_environment_yml_matches_pyproject():
    assert _conda_pins() == _pyproject_pins()


def test_torch_is_pinned_exactly_to_the_cpu_build_on_disk():
    # any other version or a range pulls a multi-GB CUDA build
    assert _pyproject_pins()["torch"] == "2.13.0"
    assert "pytorch-cpu=2.13.0" in (ROOT / "environment.yml").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make lab" in readme
    assert re.search(r"^make test$", ci, re.MULTILINE)


# `make lab` (localhost, token, --allow-root for root) is started for real in tests/test_lab_launch.py


def test_license_is_an_spdx_string_for_a_setuptools_that_reads_it():
    # a TOML table makes `pip install` print a deprecation warning; the string needs setuptools >= 77
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    assert pyproject["build-system"]["requires"] == ["setuptools>=77"]


def _make_install(*variables: str) -> list[str]:
    """The commands `make install` would run on a fresh .venv (make -n -B: printed, not run)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "-B", "-s", ".venv/.installed-stamp", *variables], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "pip install" in line]


def test_torch_index_installs_torch_alone_from_that_index_then_the_rest_as_usual():
    url = "https://download.pytorch.org/whl/cpu"
    default, cpu = _make_install(), _make_install(f"TORCH_INDEX={url}")
    assert not any("index-url" in line for line in default)  # the default: pip's own configuration
    pin = f"torch=={_pyproject_pins()['torch']}"
    assert len(cpu) == len(default) + 1
    # torch alone from the index, right before the project (whose torch pin it then satisfies)
    assert cpu[:-2] == default[:-1] and cpu[-1] == default[-1] and '-e ".[test]"' in cpu[-1]
    assert cpu[-2].endswith(f'pip install --quiet --index-url {url} "{pin}"')
    assert f"TORCH_INDEX={url}" in (ROOT / "README.md").read_text()
