"""One lladapt process per output folder: a second run, a --resume or an evaluation into a folder
another process holds is refused at once, naming the holder; a lock left by a process that died is
taken over, saying so; the lock is given back however a run ends; sweeps hold their folder and
refuse run folders another process holds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from lladapt.common.errors import FolderInUseError
from lladapt.common.folder_lock import LOCK_FILE, FolderLock, holder_of, locked_folder
from tests.fault_support import config_file, error_line, lladapt, snapshot, two_run_sweep
from tests.training_support import run_config

HOLD = textwrap.dedent("""
    import sys, time
    from lladapt.common.folder_lock import FolderLock
    FolderLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


@contextlib.contextmanager
def held_by_another_process(folder):
    """A process that holds ``folder``'s lock until the block ends; yields its lock record."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield json.loads((folder / LOCK_FILE).read_text())
    finally:
        proc.kill()
        proc.wait()


def _in_use(folder, record, what="output_dir"):
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started"]))
    return (f"Error: {what} '{folder}' is in use by pid {record['pid']} on host {record['host']}, started {when} "
            f"({record['command']}); wait for it to finish, or use another {what}")


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_runs_started_together_the_second_is_refused_at_once(stories260k, tmp_path):
    out = tmp_path / "run"
    config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=12, save_steps=4))
    first = subprocess.Popen([sys.executable, "-m", "lladapt.cli", "train", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK_FILE).is_file() or not (out / LOCK_FILE).read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        record = json.loads((out / LOCK_FILE).read_text())
        assert record["pid"] == first.pid and record["host"] == socket.gethostname()
        second = lladapt("train", str(config))
        assert second.exit_code == 1 and error_line(second) == _in_use(out, record)
        assert "loading" not in second.stderr  # refused before the model loads
        resumed = lladapt("train", str(config), "--resume")
        assert resumed.exit_code == 1 and error_line(resumed) == _in_use(out, record)
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    # the first run's files are its own, whole: every step logged once, its adapter, no lock left
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "checkpoints", "config.json", "metrics.jsonl",
                                                      "results.json", "trained.json"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-8"]


def test_resume_and_eval_into_a_held_folder_are_refused_and_change_nothing(stories260k, tmp_path):
    out = tmp_path / "run"
    config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=2, save_steps=1))
    assert lladapt("train", str(config)).exit_code == 0
    before = snapshot(out)
    evaluation = config_file(tmp_path / "e.json", {"model": str(stories260k), "output_dir": str(out),
                                                    "eval": {"datasets": [{"name": "arith", "limit": 2}]}})
    with held_by_another_process(out) as record:
        for args in (["train", str(config), "--resume"], ["train", str(config), "--overwrite"],
                     ["eval", str(evaluation), "--adapter", str(out / "adapter")]):
            result = lladapt(*args)
            assert result.exit_code == 1 and error_line(result) == _in_use(out, record), args
        assert holder_of(out) is not None
    assert {k: v for k, v in snapshot(out).items() if k.name != LOCK_FILE} == before


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(stories260k, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    pid = _dead_pid()
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0.0,
                                             "command": "lladapt train c.json"}))
    config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=1, save_steps=0))
    result = lladapt("train", str(config))
    assert result.exit_code == 0, result.output
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(0.0))
    assert (f"taking over the lock of '{out}' left by pid {pid} on host {socket.gethostname()}, started {when} "
            "(lladapt train c.json), which no longer runs") in result.stderr.splitlines()
    assert not (out / LOCK_FILE).exists()


def test_a_lock_left_by_another_host_is_not_taken(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0.0, "command": "x"}))
    with pytest.raises(FolderInUseError) as info:
        FolderLock(tmp_path).acquire()
    assert str(info.value).endswith(f"which this host cannot check; if that process no longer runs, delete {tmp_path / LOCK_FILE}")


def test_one_process_cannot_take_a_folder_twice(tmp_path):
    first = FolderLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(FolderInUseError, match=f"is in use by pid {os.getpid()} on host"):
            FolderLock(tmp_path).acquire()
    finally:
        first.release()
    assert not (tmp_path / LOCK_FILE).exists() and holder_of(tmp_path) is None


def test_the_lock_is_given_back_when_the_run_fails(stories260k, tmp_path):
    """The lock folder is made for the run; a run that fails after taking it leaves nothing."""
    out = tmp_path / "ev"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    evaluation = config_file(tmp_path / "e.json", {"model": str(stories260k), "output_dir": str(out),
                                                    "eval": {"datasets": [{"name": "arith", "limit": 2}]}})
    result = lladapt("eval", str(evaluation), "--adapter", str(tmp_path / "broken"))
    assert result.exit_code == 1 and "is not a readable safetensors file" in error_line(result)
    assert not out.exists()


def test_sigterm_outside_training_exits_through_the_lock(tmp_path):
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM is handled by the test runner here")
    with pytest.raises(SystemExit) as info, locked_folder(tmp_path / "x"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives here
    assert info.value.code == 128 + signal.SIGTERM
    assert not (tmp_path / "x").exists() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


SIGTERM_AT_STEP = textwrap.dedent("""
    import os, signal, sys
    from lladapt.training import progress
    log = progress.Progress.log
    def patched(self, record):
        log(self, record)
        if record["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    progress.Progress.log = patched
    from lladapt.cli import main
    main(["train", sys.argv[1]])
""")


def test_sigterm_during_training_saves_a_checkpoint_and_gives_the_lock_back(stories260k, tmp_path):
    out = tmp_path / "run"
    config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=6, save_steps=0))
    proc = subprocess.run([sys.executable, "-c", SIGTERM_AT_STEP, str(config)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "training stopped by SIGTERM after step 2" in proc.stderr
    assert (out / "checkpoints" / "step-2").is_dir() and not (out / LOCK_FILE).exists()


def test_a_sweep_refuses_run_folders_another_process_holds_and_holds_its_own(stories260k, tmp_path):
    from lladapt.sweep.state import run_status

    spec = two_run_sweep(tmp_path, stories260k)
    run_folder = tmp_path / "sweep" / "r-2"
    run_folder.mkdir(parents=True)
    with held_by_another_process(run_folder) as record:
        with pytest.raises(FolderInUseError) as info:
            run_status(run_folder, {})
        described = _in_use(run_folder, record).removeprefix("Error: output_dir ")
        assert str(info.value).startswith(f"run folder {described.split(';')[0]}")
        result = lladapt("sweep", str(spec))
        assert result.exit_code == 1 and error_line(result).startswith(f"Error: run folder '{run_folder}' is in use by pid")
    with held_by_another_process(tmp_path / "sweep") as record:
        result = lladapt("sweep", str(spec))
        assert result.exit_code == 1 and error_line(result) == _in_use(tmp_path / "sweep", record, "sweep output_dir")


def test_without_kernel_locks_the_holder_file_decides(tmp_path, monkeypatch):
    """A network file system mounted without locking (flock fails with ENOLCK): a holder that
    still runs on this host refuses, one that died is taken over."""
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"pid": sleeper.pid, "host": socket.gethostname(), "started": 0.0, "command": "lladapt run x"}
        (tmp_path / LOCK_FILE).write_text(json.dumps(record))
        with pytest.raises(FolderInUseError, match=f"is in use by pid {sleeper.pid} on host"):
            FolderLock(tmp_path).acquire()
        assert holder_of(tmp_path) is not None
    finally:
        sleeper.kill()
        sleeper.wait()
    said = []
    lock = FolderLock(tmp_path)
    lock.acquire(said.append)
    assert said and said[0].startswith(f"taking over the lock of '{tmp_path}' left by pid {sleeper.pid}")
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
