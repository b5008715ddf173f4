"""The Python API the CLI wraps: ``run(config)`` = load model -> attach adapter -> data ->
train -> evaluate -> results files (:mod:`.pipeline`), ``evaluate(config)`` without training
(:mod:`.evaluate_only`); the model of a run (:mod:`.build`) and the files of its folder
(:mod:`.run_folder`).

>>> from lladapt.api import run
>>> results = run("examples/quickstart.yaml", overrides=["train.max_steps=10"])  # doctest: +SKIP
"""

from lladapt.api.build import Built, as_config, build
from lladapt.api.echo import Echo
from lladapt.api.evaluate_only import evaluate
from lladapt.api.pipeline import run
from lladapt.api.run_folder import (
    ADAPTER_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    TRAINED_FILE,
)

__all__ = [
    "ADAPTER_DIR",
    "CONFIG_FILE",
    "METRICS_FILE",
    "RESULTS_FILE",
    "TRAINED_FILE",
    "Built",
    "Echo",
    "as_config",
    "build",
    "evaluate",
    "run",
]
