"""Training: the loop, one named step a function (:mod:`.loop`), its plan (:mod:`.plan`), its
state (:mod:`.state`), the set-up of model, optimizer and accelerator (:mod:`.prepare`),
exact-resume checkpoints (:mod:`.resume` for the loop's state, :mod:`.checkpoints` for the
files), the length-grouped batch order (:mod:`.sampler`), the loss under accumulation
(:mod:`.loss`), precision (:mod:`.precision`), guards against NaN and signals (:mod:`.guards`),
progress and metrics (:mod:`.progress`), trackers (:mod:`.trackers`), the held-out validation
split and loss (:mod:`.validation`)."""

from lladapt.training.loop import TrainResult, make_plan, total_steps, train
from lladapt.training.precision import mixed_precision
from lladapt.training.validation import split_validation

__all__ = ["TrainResult", "make_plan", "mixed_precision", "split_validation", "total_steps", "train"]
