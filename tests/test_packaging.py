"""The conda environment and the pyproject must list the same dependencies."""

from __future__ import annotations

import re
import tomllib

import yaml

from duallora import paths

ROOT = paths.repo_root()


def _name(requirement: str) -> str:
    """Distribution name of a requirement string, normalised (PEP 503)."""
    name = re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_dependencies() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {_name(r) for r in data["project"]["dependencies"]}


def environment_dependencies() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_lists, "environment.yml has no pip: section"
    return {_name(r) for r in pip_lists[0] if not r.startswith("-")}


def test_environment_matches_pyproject() -> None:
    py, env = pyproject_dependencies(), environment_dependencies()
    assert py == env, f"only in pyproject: {sorted(py - env)}; only in environment.yml: " \
                      f"{sorted(env - py)}"


def test_drift_is_detected(tmp_path, monkeypatch) -> None:
    """The comparison really notices a dependency that one file gains and the other lacks."""
    text = (ROOT / "pyproject.toml").read_text().replace('"tqdm>=4.65",', '"tqdm>=4.65", "rich",')
    fake = tmp_path / "pyproject.toml"
    fake.write_text(text)
    (tmp_path / "environment.yml").write_text((ROOT / "environment.yml").read_text())
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert "rich" in pyproject_dependencies() - environment_dependencies()


def test_no_forbidden_dependencies() -> None:
    """timm and torchvision pull a CUDA torch on CPU machines; the kit must not need them."""
    deps = pyproject_dependencies() | environment_dependencies()
    assert not deps & {"timm", "torchvision"}


def test_environment_python_and_pip() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    plain = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in plain and "pip" in plain
