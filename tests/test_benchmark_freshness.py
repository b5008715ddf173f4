"""The training figures docs/benchmarks.md presents as current describe the code on main: each
results file named in ``benchmarks/results/current.json`` records the commit it measured, and that
commit must include the last change to the code the figures depend on (the training loop, the
precision code, the adapter branches). Change that code and this fails until the benchmark is
rerun (``benchmarks/README.md`` says how) and the file replaced, unless the manifest's group
declares the commit ``neutral`` with the reason (a change that runs no code differently: a move, a
rename), for a reviewer to check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "benchmarks" / "results" / "current.json"


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def _history_or_skip() -> None:
    if _git("rev-parse", "--git-dir").returncode:
        pytest.skip("not a git checkout: the recorded commits cannot be compared")
    if _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        pytest.skip("a shallow clone lacks the history to compare commits (git fetch --unshallow)")


def _entries() -> list[tuple[str, list[str], str]]:
    manifest = json.loads(MANIFEST.read_text())
    return [(group, spec["measures"], name) for group, spec in manifest.items() for name in spec["results"]]


def _neutral(group: str) -> dict[str, str]:
    return json.loads(MANIFEST.read_text())[group].get("neutral", {})


@pytest.mark.parametrize(("group", "measures", "name"), _entries())
def test_current_results_were_measured_on_the_latest_measured_code(group, measures, name):
    _history_or_skip()
    record = json.loads((ROOT / name).read_text())
    recorded = record.get("commit", "")
    assert recorded and not recorded.endswith("+dirty"), f"{name}: measured on uncommitted code ({recorded!r})"
    last = _git("log", "-1", "--format=%H", "--", *measures).stdout.strip()
    assert last, f"{group}: no commit touches {measures}"
    if _git("cat-file", "-e", f"{recorded}^{{commit}}").returncode:
        pytest.fail(f"{name}: recorded commit {recorded} is not in this repository's history")
    if _git("merge-base", "--is-ancestor", recorded, "HEAD").returncode:
        pytest.fail(f"{name}: recorded commit {recorded} is not an ancestor of HEAD")
    since = _git("rev-list", f"{recorded}..HEAD", "--", *measures).stdout.split()
    neutral = _neutral(group)
    newer = [c for c in since if c not in neutral]
    assert not newer, (
        f"{name} measured commit {recorded[:10]}, older than the last change to {group} code "
        f"({newer[0][:10]}: {_git('log', '-1', '--format=%s', newer[0]).stdout.strip()[:80]}); rerun the benchmark"
    )


def test_every_neutral_commit_is_real_and_gives_its_reason():
    _history_or_skip()
    for group in json.loads(MANIFEST.read_text()):
        for commit, why in _neutral(group).items():
            assert len(commit) == 40 and not _git("cat-file", "-e", f"{commit}^{{commit}}").returncode, commit
            assert len(why.split()) >= 5, f"{group}: say why {commit[:10]} runs no code differently"


def test_every_current_results_file_exists_and_names_what_it_measures():
    for group, measures, name in _entries():
        assert (ROOT / name).is_file(), name
        assert all((ROOT / m).exists() for m in measures), (group, measures)
