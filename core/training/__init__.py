"""Training: the loop (:mod:`.loop`), exact-resume checkpoints (:mod:`.checkpoints`), the
length-grouped batch order (:mod:`.sampler`), the loss under accumulation (:mod:`.loss`), guards
against NaN and signals (:mod:`.guards`), progress and metrics (:mod:`.progress`), the held-out
validation split (:mod:`.validation`)."""

from lladapt.training.loop import TrainResult, make_plan, total_steps, train
from lladapt.training.precision import mixed_precision
from lladapt.training.validation import split_validation

__all__ = ["TrainResult", "make_plan", "mixed_precision", "split_validation", "total_steps", "train"]
