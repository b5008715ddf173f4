"""The corpus: each family's strategy and runner, and :func:`run_family`, which draws
``examples`` cases of a family with hypothesis (seeded) and checks each one, reporting every
outcome. Each case gets a fresh folder under the corpus's root, removed afterwards; the pristine
inputs some families edit (an adapter folder, a run cut off after a checkpoint) are built once."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as seeded
from hypothesis import strategies as st

from tests.fuzz import adapters, checkpoints, configs, datasets, predictions
from tests.fuzz.cli_property import Outcome, quiet_environment

FAMILIES = ("config", "dataset", "adapter", "checkpoint", "sweep", "predictions")


class Corpus:
    """The families over one base model (a local folder, e.g. stories260k), working under ``root``."""

    def __init__(self, root: Path, model: str):
        self.root, self.model = Path(root), str(model)

    @functools.cached_property
    def adapter_folders(self) -> dict[str, Path]:
        return adapters.make_pristine(self._folder("pristine-adapters"), self.model)

    @functools.cached_property
    def cut_off_run(self) -> tuple[Path, Path, dict[str, Any]]:
        return checkpoints.make_pristine(self._folder("pristine-run"), self.model)

    def _folder(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def strategy(self, family: str) -> st.SearchStrategy[Any]:
        return {
            "config": lambda: configs.text_cases(configs.base_config(self.model, str(self.root / "out"))),
            "sweep": lambda: configs.text_cases(configs.base_sweep(self.model, str(self.root / "sweep"))),
            "dataset": datasets.data_cases,
            "adapter": adapters.adapter_cases,
            "checkpoint": checkpoints.checkpoint_cases,
            "predictions": predictions.prediction_cases,
        }[family]()

    def run_one(self, family: str, case: Any) -> Outcome:
        workdir = Path(tempfile.mkdtemp(prefix=f"{family}-", dir=self.root))
        try:
            if family == "config":
                return configs.run_config_case(case, workdir)
            if family == "sweep":
                return configs.run_sweep_case(case, workdir)
            if family == "dataset":
                return datasets.run_data_case(case, workdir, self.model)
            if family == "adapter":
                return adapters.run_adapter_case(case, workdir, self.model, self.adapter_folders)
            if family == "checkpoint":
                return checkpoints.run_checkpoint_case(case, workdir, self.cut_off_run)
            return predictions.run_prediction_case(case, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def run_family(corpus: Corpus, family: str, examples: int, seed: int,
               report: Callable[[Outcome], None] = lambda _: None) -> None:
    """Check ``examples`` drawn cases of ``family`` (the same ones for the same ``seed``); a case
    that breaks the property raises, shrunk by hypothesis to a small one."""

    @seeded(seed)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink], print_blob=True)
    @given(corpus.strategy(family))
    def check(case: Any) -> None:
        report(corpus.run_one(family, case))

    with quiet_environment():
        check()
