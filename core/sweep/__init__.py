"""``lladapt sweep``: a grid of runs (adapters x placements x seeds x datasets, any config key),
run locally or on Ray, finished runs skipped, one combined report at the end."""

from lladapt.sweep.runner import SweepResult, plan, run_sweep
from lladapt.sweep.spec import Sweep, load_sweep

__all__ = ["Sweep", "SweepResult", "load_sweep", "plan", "run_sweep"]
