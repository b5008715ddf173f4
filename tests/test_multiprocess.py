"""Two processes (``accelerate launch --multi_gpu --num_processes 2`` on a machine without a GPU:
two CPU processes, gloo) train the same adapter as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from lladapt.config import TrainSection
from lladapt.training import train
from tests.training_support import random_examples, tiny_trainable

# batch 8 = micro 2 x 4 micro-batches per step; 30 examples: 15 micro-batches an epoch, so steps
# end mid-epoch and the last step is short (3 micro-batches: 2 on one process, 1 on the other)
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
