"""A write that fails (a full disk, a quota, a read-only file system, no permission) anywhere lladapt
writes: one line naming the file and the cause in words, the last complete checkpoint and the
command that continues; nothing half-written left looking complete; and the resumed run equals the
uninterrupted one. Faults are injected where files are opened (tests/fault_support.py) and, where
this machine allows mounting one, a real 200 kB tmpfs fills up."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from lladapt.common.errors import WriteError
from lladapt.common.fileio import append_text, write_text_atomic, writing
from tests.fault_support import (
    config_file,
    error_line,
    fail_writes,
    grow_tmpfs,
    lladapt,
    small_tmpfs,
    snapshot,
    two_run_sweep,
)
from tests.training_support import adapter_tensors, max_diff, run_config, uninterrupted_adapter


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return uninterrupted_adapter(tmp_path_factory, max_steps=9, save_steps=3)


# --------------------------------------------------------------------------- the one translation


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded"),
    (errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied"),
])
def test_a_failed_write_names_the_file_and_the_cause_in_words(tmp_path, code, words):
    with pytest.raises(WriteError) as info, writing(tmp_path / "x.json"):
        raise OSError(code, os.strerror(code))
    assert str(info.value) == f"cannot write {tmp_path / 'x.json'}: {words}"
    assert info.value.exit_code == 1


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old\n")
    fail_writes(monkeypatch, lambda p: p.parent == tmp_path)
    with pytest.raises(WriteError, match="results.json: no space left on device"):
        write_text_atomic(target, "new\n")
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"] and target.read_text() == "old\n"


def test_an_append_that_fails_leaves_no_partial_line(tmp_path):
    """A real file system that fills up in the middle of a line: the line is cut back out."""
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        path = disk / "eval" / "addsub-test.jsonl"
        path.parent.mkdir()
        append_text(path, '{"index": 0}\n')
        with pytest.raises(WriteError, match="addsub-test.jsonl: no space left on device"):
            append_text(path, '{"index": 1, "response": "' + "x" * 200_000 + '"}\n')
        assert path.read_text() == '{"index": 0}\n'


# --------------------------------------------------------------------------- a run


def test_a_full_disk_during_a_checkpoint_says_where_to_resume_and_the_resume_is_exact(
        stories260k, tmp_path, uninterrupted, monkeypatch):
    out = tmp_path / "run"
    config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=9, save_steps=3))
    failed = fail_writes(monkeypatch, lambda p: p.name == "optimizer.pt" and ".step-6." in str(p))
    result = lladapt("train", str(config))
    assert result.exit_code == 1 and failed
    assert error_line(result) == (
        f"Error: cannot write {out}/checkpoints/step-6/optimizer.pt: no space left on device; "
        f"the partial checkpoint step-6 was removed; the last complete checkpoint is {out}/checkpoints/step-3; "
        f"free space, then continue from it with `lladapt train {config} --resume`")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3"]  # no partial step-6
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl"]  # no lock left
    monkeypatch.undo()  # space is free again
    resumed = lladapt("train", str(config), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.stderr and "step 3 of 9" in resumed.stderr
    assert max_diff(adapter_tensors(out), uninterrupted) == 0.0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))


def test_a_real_full_tmpfs_then_free_space_and_resume(stories260k, tmp_path, uninterrupted):
    """The report's case: the output folder on a 200 kB tmpfs; a checkpoint takes about 115 kB."""
    with small_tmpfs(tmp_path / "disk", "200k") as disk:
        out = disk / "run"
        config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=9, save_steps=3))
        result = lladapt("train", str(config))
        assert result.exit_code == 1
        line = error_line(result)
        assert line.startswith(f"Error: cannot write {out}/checkpoints/step-6/") and ": no space left on device; " in line
        assert line.endswith(f"the last complete checkpoint is {out}/checkpoints/step-3; free space, then continue "
                             f"from it with `lladapt train {config} --resume`")
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3"]
        grow_tmpfs(disk, "4m")
        resumed = lladapt("train", str(config), "--resume")
        assert resumed.exit_code == 0, resumed.output
        assert max_diff(adapter_tensors(out), uninterrupted) == 0.0


def test_a_full_disk_while_saving_the_final_adapter(stories260k, tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=4, save_steps=2))
    fail_writes(monkeypatch, lambda p: p.name == "adapter_model.safetensors" and "checkpoints" not in str(p),
                errno.EDQUOT)
    result = lladapt("train", str(config))
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: cannot write {out}/adapter/adapter_model.safetensors: disk quota exceeded; the last complete "
        f"checkpoint is {out}/checkpoints/step-2; free space, then continue from it with "
        f"`lladapt train {config} --resume`")
    assert not (out / "adapter").exists() and not any(p.name.startswith(".adapter") for p in out.iterdir())


def test_a_full_disk_while_writing_predictions_keeps_whole_lines_and_the_rerun_finishes(
        stories260k, tmp_path, monkeypatch):
    config = {"model": str(stories260k), "output_dir": str(tmp_path / "ev"),
              "eval": {"datasets": [{"name": "arith", "limit": 4}], "max_new_tokens": 4, "batch_size": 1}}
    path = config_file(tmp_path / "e.json", config)
    reference = lladapt("eval", str(path), "--set", f"output_dir={tmp_path / 'ref'}")
    assert reference.exit_code == 0
    appends = []

    def third_append(path):  # the first two batches are written, the third finds the disk full
        if path.suffix == ".jsonl":
            appends.append(path)
        return len(appends) > 2 and path.suffix == ".jsonl"

    fail_writes(monkeypatch, third_append)
    result = lladapt("eval", str(path))
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: cannot write {tmp_path / 'ev' / 'eval' / 'arith-test.jsonl'}: no space left on device; "
        "free space, then run the same command again: the predictions already written are kept")
    lines = (tmp_path / "ev" / "eval" / "arith-test.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 2 and all(line.endswith("\n") for line in lines)
    assert not (tmp_path / "ev" / "results.json").exists()
    monkeypatch.undo()
    assert lladapt("eval", str(path)).exit_code == 0

    def responses(folder):
        return [json.loads(line)["response"] for line in (folder / "eval" / "arith-test.jsonl").read_text().splitlines()]

    assert responses(tmp_path / "ev") == responses(tmp_path / "ref")


def test_report_into_a_folder_that_cannot_be_made_or_written(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"model": "m", "adapter": None, "train": None, "eval": []}))
    result = lladapt("report", str(run), "--out", "/proc/x", "--no-charts")
    assert result.exit_code == 1 and error_line(result) == "Error: cannot write /proc/x: no such file or directory"
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("an older report\n")
    fail_writes(monkeypatch, lambda p: p.parent == out, errno.EROFS)
    result = lladapt("report", str(run), "--out", str(out), "--no-charts")
    assert result.exit_code == 1
    assert error_line(result) == f"Error: cannot write {out / 'report.md'}: read-only file system"
    assert snapshot(out) == {out.joinpath("report.md").relative_to(out): b"an older report\n"}


def test_a_sweep_that_cannot_write_its_state_starts_nothing(stories260k, tmp_path, monkeypatch):
    spec = two_run_sweep(tmp_path, stories260k)
    fail_writes(monkeypatch, lambda p: "configs" in p.parts, errno.EACCES)
    result = lladapt("sweep", str(spec))
    assert result.exit_code == 1
    assert error_line(result) == f"Error: cannot write {tmp_path / 'sweep' / 'configs' / 'r-2.json'}: permission denied"
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["configs"]  # no run started, no lock left
    assert not list((tmp_path / "sweep" / "configs").iterdir())


def test_checkpoint_files_are_read_back_as_torch_wrote_them(stories260k, tmp_path):
    """torch.save into memory, then written: the files load with weights_only=True as before."""
    out = tmp_path / "run"
    config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=2, save_steps=1))
    assert lladapt("train", str(config)).exit_code == 0
    step = out / "checkpoints" / "step-1"
    assert torch.load(step / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    assert set(torch.load(step / "rng.pt", weights_only=True)) >= {"torch", "python", "numpy"}


# --------------------------------------------------------------------------- reading, memory


def test_a_file_the_cli_cannot_read_is_named_not_unexpected(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "eval" / "arith-test.jsonl").mkdir(parents=True)  # a folder where a file goes
    result = lladapt("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.exit_code == 1
    assert error_line(result) == f"Error: {tmp_path / 'a' / 'eval' / 'arith-test.jsonl'}: is a directory"


def test_out_of_memory_is_said_as_such(tmp_path, monkeypatch):
    import lladapt.evaluation.paired as paired

    def exhausted(*_):
        raise MemoryError()

    monkeypatch.setattr(paired, "compare_runs", exhausted)
    result = lladapt("compare", str(tmp_path), str(tmp_path))
    assert result.exit_code == 1 and error_line(result) == (
        "Error: out of memory; lower train.micro_batch_size or eval.batch_size, or use a smaller model")
