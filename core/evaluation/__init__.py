"""The evaluator: batched, batch-size-invariant generation (left padding, attention mask,
position ids from the mask, the model's own stop tokens), the template's response extraction,
answer parsing and scoring, log-likelihood scoring of multiple-choice sets, resumable prediction
files, and the report over run folders. One module per job:

- :mod:`.generation`: decoding settings, one batch of ``generate``, which path an entry takes
- :mod:`.batching`: length-sorted batches
- :mod:`.streaming`: every item through the continuous batcher (:mod:`.continuous`)
- :mod:`.loglik`: continuation log-likelihoods of answer choices
- :mod:`.scoring`: parse and score
- :mod:`.store`: the resumable predictions file
- :mod:`.runner`: one dataset entry; :mod:`.suite`: every entry of a config
- :mod:`.progress`: the progress bar; :mod:`.report`: tables and charts over run folders
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lladapt.evaluation.generation import Decoding, Generated, generate_batch
from lladapt.evaluation.scoring import Prediction, Score, score

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase

    from lladapt.components.interfaces import AnswerParser, Example, PromptTemplate

__all__ = ["Decoding", "Generated", "Prediction", "Score", "evaluate_dataset", "generate_batch", "score"]


def evaluate_dataset(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    name: str,
    examples: Sequence[Example],
    parser: AnswerParser,
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    num_beams: int = 1,
    stop: Sequence[str] = (),
) -> Score:
    """Evaluate ``examples`` in memory (no files): generate, extract, parse, score."""
    from lladapt.components.interfaces import Dataset
    from lladapt.evaluation.runner import Entry, Evaluation, evaluate_entry, prepared

    decoding = Decoding(max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=batch_size,
                        stop=tuple(stop))
    entry = Entry(name, name, "", Dataset(), examples, parser)
    with prepared(model, merge=False):
        result = evaluate_entry(model, tokenizer, template, entry, Evaluation(decoding))
    result.label = result.split = None
    return result
