"""Two processes (``accelerate launch --multi_gpu --num_processes 2`` on a machine without a GPU:
two CPU processes, gloo) train the same adapter as one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lladapt.config import TrainSection
from lladapt.training import train
from tests.training_support import random_examples, tiny_trainable

# batch 8 = micro 2 x 4 micro-batches per step; 30 examples: 15 micro-batches an epoch, so steps
# end mid-epoch and the last step is short (2 micro-batches: 30 in all, 7 steps of 4 before it)
SETTINGS = dict(epochs=2, batch_size=8, micro_batch_size=2, learning_rate=0.01, warmup_steps=1,
                logging_steps=1, save_steps=0, progress="none")

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from safetensors.torch import save_file
    from lladapt.config import TrainSection
    from lladapt.training import train
    from lladapt.training.checkpoints import trainable_state
    from tests.test_multiprocess import SETTINGS
    from tests.training_support import random_examples, tiny_trainable
    model = tiny_trainable()
    result = train(model, random_examples(30), TrainSection(**SETTINGS), learning_rate=0.01,
                   pad_token_id=0, metrics=__import__("pathlib").Path(sys.argv[1]).with_suffix(".jsonl"))
    from accelerate import PartialState
    assert PartialState().num_processes == 2 and PartialState().distributed_type == "MULTI_CPU"
    if PartialState().is_main_process:
        save_file(trainable_state(model), sys.argv[1])
        print("steps", result.steps)
""")


@pytest.mark.slow
def test_two_processes_train_the_same_adapter_as_one(tmp_path):
    model = tiny_trainable()
    single = train(model, random_examples(30), TrainSection(**SETTINGS), learning_rate=0.01,
                   pad_token_id=0, echo=lambda _: None)
    assert single.steps == 8
    save_file({n: p.detach() for n, p in model.named_parameters() if p.requires_grad}, tmp_path / "one.safetensors")

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    launcher = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        # --multi_gpu is accelerate's torchrun launcher; without a GPU the processes run on the
        # CPU with gloo (accelerate's --cpu flag would start a single process)
        [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
         str(tmp_path / "two.safetensors"), str(Path(__file__).parents[1])],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps 8" in proc.stdout
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert one.keys() == two.keys()
    assert max((one[k] - two[k]).abs().max().item() for k in one) <= 1e-5
    # trained at all: the adapter moved away from its initial values
    start = {n: p for n, p in tiny_trainable().named_parameters() if p.requires_grad}
    assert max((one[k] - start[k].detach()).abs().max().item() for k in one) > 1e-3
    # written once, by the main process
    assert len((tmp_path / "two.jsonl").read_text().splitlines()) == 8


# `lladapt train CONFIG [--resume]` in each of two processes, with two changes made from inside:
# - each process's RNG is seeded apart once training is set up (a resume then restores the saved
#   states over it). On the CPU, dropout draws one seed from the generator per call, so processes
#   that make the same calls keep equal RNG states; on a GPU they part ways by tensor size. The
#   test seeds them apart so that a resume must restore each process's own state, as on a GPU;
# - with KILL_AT > 0, at that step rank 0 SIGKILLs the launcher (its parent) and every process
#   below it, itself last (torchrun starts each worker in a session of its own, so a process
#   group would not reach them all): as when a machine goes down, at a step the test picks.
TWO_PROCESS_RUN = textwrap.dedent("""
    import os, pathlib, signal, sys
    import torch
    from lladapt.training import loop, progress
    config_path, kill_at, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

    prepare = loop.prepare
    def seeded_apart(*a, **k):
        run = prepare(*a, **k)
        torch.manual_seed(1000 + run.accelerator.process_index)
        return run
    loop.prepare = seeded_apart

    def tree(root):
        parents = {}
        for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(stat.parent.name)] = int(fields[1])
        found, todo = [], [root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += [child for child, parent in parents.items() if parent == pid]
        return found

    log = progress.Progress.log
    def patched(self, record):
        log(self, record)
        if record["step"] == kill_at:
            for pid in sorted(tree(os.getppid()), key=lambda p: p == os.getpid()):
                os.kill(pid, signal.SIGKILL)
    progress.Progress.log = patched
    from lladapt.cli import main
    main([*args, config_path])
""")


def launch(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``accelerate launch`` of two CPU processes (gloo) in a process group of its own."""
    launcher = Path(sys.executable).with_name("accelerate")
    return subprocess.run(
        [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])},
    )


def two_process_config(stories260k: Path, out: Path, distributed: str = "auto") -> Path:
    """stories260k + LoRA with dropout 0.1, checkpoints every 2 of 8 steps, evaluated on 8 arith
    items, as a JSON file."""

    from tests.training_support import run_config

    config = run_config(stories260k, out, progress="none", distributed=distributed)
    config["eval"] = {"datasets": [{"name": "arith", "limit": 8}], "max_new_tokens": 4, "batch_size": 2}
    path = out.with_suffix(".json")
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_two_processes_killed_after_a_checkpoint_resume_to_the_uninterrupted_adapter(
    stories260k, tmp_path, distributed
):
    """Each process keeps its own RNG state in the checkpoint and resumes with it: the resumed
    run's adapter equals the uninterrupted run's within 1e-6 (dropout on), with the base whole
    on each process (ddp) or sharded (fsdp); then both evaluate, sharing the items."""
    script = tmp_path / "two_process_run.py"
    script.write_text(TWO_PROCESS_RUN)
    whole = two_process_config(stories260k, tmp_path / "whole", distributed)
    done = launch(str(script), str(whole), "0", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rng = torch.load(tmp_path / "whole" / "checkpoints" / "step-4" / "rng.pt", weights_only=True)
    assert not torch.equal(rng["ranks"][0]["torch"], rng["ranks"][1]["torch"])

    killed = two_process_config(stories260k, tmp_path / "killed", distributed)
    died = launch(str(script), str(killed), "5", "run", cwd=tmp_path)
    assert died.returncode == -9, died.stderr[-3000:]  # the launcher itself was killed
    assert not (tmp_path / "killed" / "adapter").exists()  # killed mid-run
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step-2", "step-4"]

    resumed = launch(str(script), str(killed), "0", "run", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "step-4" in resumed.stderr
    a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    answers = [[json.loads(line)["response"] for line in (out / "eval" / "arith-test.jsonl").read_text().splitlines()]
               for out in (tmp_path / "whole", tmp_path / "killed")]
    assert len(answers[0]) == 8 and answers[0] == answers[1]


@pytest.mark.slow
def test_two_processes_share_an_evaluation_and_write_what_one_process_writes(stories260k, tmp_path):
    """``accelerate launch ... -m lladapt.cli eval``: the processes share the batches, the main one
    writes one predictions file and one results.json, identical to one process's (but for the
    timings); a partial file from an interrupted evaluation is completed the same way."""

    from lladapt.cli import main

    def config(out: Path, **eval_settings) -> Path:
        path = out.with_suffix(".json")
        path.write_text(json.dumps({
            "model": str(stories260k), "output_dir": str(out),
            "eval": {"datasets": [{"name": "arith", "limit": 22}], "max_new_tokens": 6,
                     "batch_size": 4, **eval_settings},
        }))
        return path

    def lines(out: Path) -> list[dict]:
        rows = [json.loads(line) for line in (out / "eval" / "arith-test.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    def results(out: Path) -> list[dict]:
        # one process runs the continuous batcher, two share length-sorted batches
        data = json.loads((out / "results.json").read_text())
        return [{k: v for k, v in entry.items() if k not in ("seconds", "generation_path")} for entry in data["eval"]]

    with pytest.raises(SystemExit) as exited:
        main(["eval", str(config(tmp_path / "one"))])
    assert exited.value.code == 0
    one = lines(tmp_path / "one")
    assert len(one) == 22

    two = launch("-m", "lladapt.cli", "eval", str(config(tmp_path / "two")), cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert lines(tmp_path / "two") == one  # same lines, same order: batch by batch
    assert results(tmp_path / "two") == results(tmp_path / "one")
    paths = [json.loads((tmp_path / run / "results.json").read_text())["eval"][0]["generation_path"]
             for run in ("one", "two")]
    assert paths == ["continuous", "compacting"]

    # an evaluation killed after 10 predictions, finished by two processes
    (tmp_path / "part").mkdir()
    shutil.copytree(tmp_path / "one" / "eval", tmp_path / "part" / "eval")
    predictions = tmp_path / "part" / "eval" / "arith-test.jsonl"
    predictions.write_text("".join(predictions.read_text().splitlines(keepends=True)[:10]))
    part = launch("-m", "lladapt.cli", "eval", str(config(tmp_path / "part")), cwd=tmp_path)
    assert part.returncode == 0, part.stderr[-3000:]
    finished = lines(tmp_path / "part")
    assert finished[:10] == one[:10]  # read back as they were; the 12 others computed again
    assert sorted(finished, key=lambda r: r["index"]) == sorted(one, key=lambda r: r["index"])
    assert results(tmp_path / "part")[0]["correct"] == results(tmp_path / "one")[0]["correct"]
