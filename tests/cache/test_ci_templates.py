"""ci/ templates: valid for their CI (check-jsonschema's vendored schemas) and every command they run exists."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mbuild.cli import build_parser
from tests.conftest import DIGITS_CPU, REPO, make_project

GITHUB = sorted((REPO / "ci" / "github").glob("*.yml"))
GITLAB = REPO / "ci" / "gitlab" / ".gitlab-ci.yml"
# What CI substitutes before the shell sees a line: matrix values, job index and count.
SUBSTITUTIONS = {"${{ matrix.shard }}": "1", "$CI_NODE_INDEX": "1", "$CI_NODE_TOTAL": "3"}


def _check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run([str(exe), "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True,
                          timeout=120)


def test_github_workflows_match_the_github_schema():
    assert GITHUB
    proc = _check_jsonschema("vendor.github-workflows", *GITHUB)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gitlab_pipeline_matches_the_gitlab_schema():
    proc = _check_jsonschema("vendor.gitlab-ci", GITLAB)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _shell_lines() -> list[tuple[str, str]]:
    lines = []
    for path in GITHUB:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            lines += [(path.name, s["run"]) for s in job["steps"] if "run" in s]
    for job in yaml.safe_load(GITLAB.read_text()).values():
        if isinstance(job, dict):
            lines += [(GITLAB.name, line) for key in ("before_script", "script") for line in job.get(key, [])]
    return lines


def _commands(line: str) -> list[list[str]]:
    for k, v in SUBSTITUTIONS.items():
        line = line.replace(k, v)
    line = re.sub(r"\bfor (\w+) in [^;]+; do (.*); done", r"\2", line).replace('"$b"', "dist/x.mbundle")
    return [shlex.split(part) for part in re.split(r"&&|;", line) if part.strip()]


@pytest.fixture(scope="module")
def doit_tasks(tmp_path_factory) -> set[str]:
    """Task groups `doit list` shows in a project (nothing is built)."""
    project = make_project(tmp_path_factory.mktemp("ci"), {"digits.yaml": DIGITS_CPU})
    proc = subprocess.run([sys.executable, "-m", "doit", "list"], cwd=project, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize("where,line", _shell_lines())
def test_every_command_in_the_templates_exists(where, line, doit_tasks):
    parser = build_parser()
    for argv in _commands(line):
        exe, args = argv[0], argv[1:]
        if exe in ("export", "python", "python3") and (exe == "export" or args[:2] == ["-m", "venv"]):
            continue
        if exe == "bash":
            assert (REPO / args[0]).is_file(), f"{where}: {line}: no {args[0]}"
        elif exe == ".venv/bin/mbuild":
            try:
                parser.parse_args(args)
            except SystemExit as e:
                raise AssertionError(f"{where}: `{line}`: mbuild rejects these arguments") from e
        elif exe == ".venv/bin/doit":
            assert all(a in doit_tasks for a in args), f"{where}: `{line}`: no such doit task (have {doit_tasks})"
        elif exe == ".venv/bin/pip":
            assert args[0] == "install" and (REPO / args[args.index("-c") + 1]).is_file()
            extras = re.search(r"\[(.+)\]", args[-1]).group(1).split(",")
            declared = _extras()
            assert all(e in declared for e in extras), f"{where}: {line}: unknown extra among {extras}"
        else:
            raise AssertionError(f"{where}: `{line}` runs {exe!r}, which this test does not know to exist")


def _extras() -> set[str]:
    import tomllib

    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
