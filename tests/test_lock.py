"""The lock: the exact package set the suite passed with is the one every install here uses.

``requirements-lock.txt`` is compiled from ``pyproject.toml``'s ranges by ``bash .ci/refresh-lock``
and only replaced after the suite passed on it (docs/production.md, "The lock"). These tests catch a
lock that drifted from the ranges (a range changed without a refresh), a requirement nobody pinned,
and an install path that does not use the lock.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-lock.txt"
PROJECT = "dagster-data-mesh"


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, raw in enumerate(LOCK.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{LOCK.name}:{number}: {raw!r} is not an exact pin (name==version)"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{LOCK.name}:{number}: {requirement.name} pinned twice"
        pins[name] = Version(specs[0].version)
    return pins


def _requirements() -> list[tuple[str, Requirement]]:
    """Every requirement of the project, each with where it is declared (extras included)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, requirements in project["optional-dependencies"].items():
        declared += [(f"optional-dependencies.{extra}", Requirement(r)) for r in requirements]
    return [(where, r) for where, r in declared if canonicalize_name(r.name) != PROJECT]


def test_every_requirement_is_pinned_inside_its_tested_range():
    pins = _pins()
    environment = default_environment() | {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux", "platform_system": "Linux"}
    problems = []
    for where, requirement in _requirements():
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"pyproject.toml [{where}] {requirement}: not in {LOCK.name}")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"pyproject.toml [{where}] {requirement}: {LOCK.name} pins {pins[name]}, outside the range")
    assert not problems, "the lock no longer matches pyproject.toml (run `bash .ci/refresh-lock`):\n" + "\n".join(problems)


def test_the_project_itself_is_not_in_the_lock():
    # `pip install -c lock -e .` would refuse an exact pin of the project it installs from source
    assert canonicalize_name(PROJECT) not in _pins()


def test_moto_is_held_below_the_release_that_authorizes_by_operation_name():
    """moto 5.2.6 authorizes ListObjectsV2 as s3:ListObjectsV2, not S3's s3:ListBucket (docs/production.md)."""
    assert _pins()["moto"] < Version("5.2.6")


def test_every_install_path_installs_the_lock():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, re.S)
    assert len(commands) == 2, "the Quick start has exactly two commands"
    for command in commands:
        assert "pip install -c requirements-lock.txt -e " in command, command
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = commands[1].strip()
    assert test_command in ci, f".ci/run must run the README's test command {test_command!r}"
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md requirements-lock.txt ./" in dockerfile
    assert "pip install -c requirements-lock.txt '.[k8s]'" in dockerfile
