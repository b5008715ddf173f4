"""Does bf16 autocast train like fp32? lladapt's trainer twice on the same start (same seed, same
adapter initialisation, same batches), ``precision: fp32`` then ``bf16``, and the loss of every
step side by side (the train_speed workload, shortened: ``--examples``, ``--cutoff``).

    .venv/bin/python benchmarks/precision_curve.py --examples 64 --cutoff 96 --batch 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def losses(precision: str, args: argparse.Namespace) -> list[float]:
    from train_speed import lladapt_workload
    from transformers import set_seed

    from lladapt.config import TrainSection
    from lladapt.training import train

    set_seed(42)
    model, loaded, encoded = lladapt_workload(examples=args.examples, cutoff=args.cutoff, data_dir=args.data_dir)
    settings = TrainSection(epochs=1, batch_size=args.batch, micro_batch_size=4, warmup_steps=0,
                            precision=precision, progress="none", save_steps=0, logging_steps=1)
    result = train(model, encoded, settings, learning_rate=3e-4, pad_token_id=loaded.tokenizer.pad_token_id,
                   echo=lambda _: None)
    return [round(loss, 4) for _, loss in result.losses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--cutoff", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "llm-adapters"))
    args = parser.parse_args()
    import setups

    setups.set_threads(args.threads)
    curves = {p: losses(p, args) for p in ("fp32", "bf16")}
    print(json.dumps({"settings": vars(args), "loss_per_step": curves}))


if __name__ == "__main__":
    main()
