"""Exact resume: a run killed (SIGKILL) after a checkpoint, or while writing one, resumes to the
same final adapter as an uninterrupted run; SIGINT saves and says how to resume; corrupt
checkpoints are skipped; a changed recipe is refused."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest
import torch

from lladapt.api import run
from lladapt.common.errors import LladaptError
from tests.training_support import adapter_tensors, max_diff, run_config, uninterrupted_adapter

# Runs api.run in a child process that SIGKILLs (or SIGINTs) itself at a chosen point: a real
# signal, delivered by the kernel, at a step the test picks.
CHILD = textwrap.dedent("""
    import json, os, pathlib, signal, sys
    from lladapt.training import checkpoints, progress
    config, where, at, sig = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    signum = getattr(signal, sig)
    if where == "log":  # after step `at` is logged (before that step's checkpoint, if any)
        log = progress.Progress.log
        def patched(self, record):
            log(self, record)
            if record["step"] == at:
                os.kill(os.getpid(), signum)
        progress.Progress.log = patched
    else:  # while checkpoint `at` is being written: after the adapter, tensors, optimizer, scheduler
        rng_state = checkpoints.rng_state
        folder = pathlib.Path(config["output_dir"]) / "checkpoints"
        def patched():
            if any(p.name.startswith(f".step-{at}.tmp") for p in folder.iterdir()):
                os.kill(os.getpid(), signum)
            return rng_state()
        checkpoints.rng_state = patched
    from lladapt.cli import main
    path = os.path.join(config["output_dir"] + ".json")
    open(path, "w").write(json.dumps(config))
    main(["run", path])
""")


def _child(config, where, at, sig="SIGKILL"):
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), where, str(at), sig],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return uninterrupted_adapter(tmp_path_factory)


def test_sigkill_after_a_checkpoint_then_resume_gives_the_same_adapter(stories260k, tmp_path, uninterrupted):
    at = random.Random().randint(3, 7)  # checkpoints at 2, 4, 6; killed after step `at`
    out = tmp_path / "run"
    config = run_config(stories260k, out)
    proc = _child(config, "log", at)
    assert proc.returncode == -9, proc.stderr
    assert not (out / "adapter").exists()
    newest = (at - 1) // 2 * 2  # step `at`'s own checkpoint comes after its log line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{s}" for s in range(2, newest + 1, 2)]
    messages = []
    results = run(config, resume=True, echo=messages.append)
    assert results["train"]["resumed_from"] == newest and results["train"]["steps"] == 8
    assert any(m.startswith("resuming from") for m in messages)
    diff = max_diff(adapter_tensors(out), uninterrupted)
    assert diff <= 1e-6, f"killed after step {at}: max |diff| {diff}"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))  # the steps after the checkpoint are logged once
    seconds = [r["seconds"] for r in records]  # the clock goes on from the checkpoint's
    assert seconds == sorted(seconds) and results["train"]["seconds"] >= seconds[-1]


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(stories260k, tmp_path, uninterrupted):
    out = tmp_path / "run"
    config = run_config(stories260k, out)
    proc = _child(config, "checkpoint", 4)
    assert proc.returncode == -9, proc.stderr
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names[0].startswith(".step-4.tmp-") and names[1:] == ["step-2"]
    messages = []
    results = run(config, resume=True, echo=messages.append)
    assert results["train"]["resumed_from"] == 2
    assert any("a checkpoint write that did not finish" in m for m in messages)
    assert max_diff(adapter_tensors(out), uninterrupted) <= 1e-6


def test_a_corrupt_checkpoint_is_reported_and_skipped(stories260k, tmp_path, uninterrupted):
    out = tmp_path / "run"
    config = run_config(stories260k, out)
    assert _child(config, "log", 5).returncode == -9
    (out / "checkpoints" / "step-4" / "optimizer.pt").write_bytes(b"not a checkpoint")
    (out / "checkpoints" / "step-2" / "rng.pt").unlink()
    messages = []  # nothing usable: step-4 corrupt, step-2 incomplete
    results = run(config, resume=True, echo=messages.append)
    skipped = [m for m in messages if m.startswith("skipping checkpoint")]
    assert any("step-4: incomplete or corrupt: unreadable" in m for m in skipped)
    assert any("step-2: incomplete or corrupt: missing rng.pt" in m for m in skipped)
    assert any(m.startswith("no complete checkpoint in") for m in messages)
    assert results["train"]["resumed_from"] is None  # started over, and still the same result
    assert max_diff(adapter_tensors(out), uninterrupted) <= 1e-6


def test_resume_refuses_a_changed_recipe_naming_the_keys(stories260k, tmp_path):
    out = tmp_path / "run"
    config = run_config(stories260k, out, max_steps=2, save_steps=1)
    run(config, echo=lambda _: None)
    changed = run_config(stories260k, out, max_steps=2, save_steps=1, learning_rate=0.02)
    changed["adapter"]["r"] = 8
    with pytest.raises(LladaptError) as info:
        run(changed, resume=True, echo=lambda _: None)
    message = str(info.value)
    assert "the config changes its recipe" in message
    assert "train.learning_rate: 0.01 -> 0.02" in message and "adapter.r: 4 -> 8" in message
    # evaluation and logging settings are not the recipe
    same = run_config(stories260k, out, max_steps=2, save_steps=1, logging_steps=2)
    run({**same, "eval": {"limit": 1}}, resume=True, echo=lambda _: None)


def test_sigint_saves_a_checkpoint_and_says_how_to_resume(stories260k, tmp_path, uninterrupted):
    out = tmp_path / "run"
    config = run_config(stories260k, out)
    proc = _child(config, "log", 3, "SIGINT")
    assert proc.returncode == 130, proc.stderr
    assert "training stopped by SIGINT after step 3; checkpoint saved in" in proc.stderr
    assert "run the same command again with --resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "checkpoints" / "step-3" / "trainer_state.json").is_file()
    resumed = subprocess.run([sys.executable, "-m", "lladapt.cli", "run", str(out) + ".json", "--resume"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "step 3 of 8" in resumed.stderr
    assert max_diff(adapter_tensors(out), uninterrupted) <= 1e-6


def test_keeps_only_the_newest_checkpoints(stories260k, tmp_path):
    out = tmp_path / "run"
    run(run_config(stories260k, out, save_steps=1, save_total_limit=2), echo=lambda _: None)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-6", "step-7"]
    state = json.loads((out / "checkpoints" / "step-7" / "trainer_state.json").read_text())
    assert state["step"] == 7 and state["micro_batches_done"] == 14
    assert state["config"]["train"]["learning_rate"] == 0.01
    optimizer = torch.load(out / "checkpoints" / "step-7" / "optimizer.pt", weights_only=True)
    assert optimizer["optimizer"]["state"]


def test_a_stray_later_step_folder_does_not_push_out_the_newest_checkpoints(stories260k, tmp_path):
    """Found by the fuzzed corpus: an empty `step-99` counted among the newest, so
    save_total_limit deleted the run's real checkpoints."""
    out = tmp_path / "run"
    (out / "checkpoints" / "step-99").mkdir(parents=True)
    run(run_config(stories260k, out, max_steps=4, save_steps=1, save_total_limit=2), overwrite=True,
        echo=lambda _: None)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3", "step-99"]


def test_a_logging_window_open_at_the_checkpoint_is_carried_into_the_resumed_run(stories260k, tmp_path):
    """Checkpoints every 2 steps, a log record every 4: the record of step 4 averages steps 2-4,
    and step 2 was trained before the checkpoint the run resumes from. Its loss and tokens must
    come back with the checkpoint, or the resumed run logs another mean at step 4."""
    whole = tmp_path / "whole"
    run(run_config(stories260k, whole, logging_steps=4), echo=lambda _: None)
    out = tmp_path / "run"
    config = run_config(stories260k, out, logging_steps=4)
    assert _child(config, "log", 4).returncode == -9  # after step 4's record, before checkpoint 4
    run(config, resume=True, echo=lambda _: None)

    def logged(folder):
        return [(r["step"], r["loss"]) for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]

    assert [step for step, _ in logged(whole)] == [1, 4, 8]
    assert logged(out) == logged(whole)
