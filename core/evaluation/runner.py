"""Evaluating one dataset entry: prompts -> (resume) -> length-sorted batches -> generation or
log-likelihood -> predictions appended as batches finish -> score. Greedy generation on a model
whose forward is transformers' own runs every item through one continuous batcher instead
(:mod:`.streaming`; predictions appended as rows finish), and :func:`evaluate_entries` runs
several such entries through one batcher, each entry's last rows beside the next one's first.
And the settings that make two evaluations comparable (what a resumed run must share with the
interrupted one)."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from lladapt.common.errors import ConfigError, ErrorItem
from lladapt.common.processes import processes
from lladapt.components.interfaces import AnswerParser, Dataset, Example, PromptTemplate
from lladapt.evaluation.batching import length_sorted_batches
from lladapt.evaluation.generation import Decoding, Generated, generate_batch, generation_path
from lladapt.evaluation.loglik import continuation_logliks, pick
from lladapt.evaluation.packing import packed_linears
from lladapt.evaluation.progress import NoProgress, Progress
from lladapt.evaluation.scoring import Prediction, Score, judge
from lladapt.evaluation.store import PredictionStore, prompt_hash
from lladapt.evaluation.streaming import SharedStream, shared_prefix

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")


@dataclass(frozen=True)
class Evaluation:
    """How to evaluate: decoding for ``generate``, or ``loglik`` scoring of choices."""

    decoding: Decoding
    scoring: Literal["generate", "loglik"] = "generate"
    #: loglik: divide each choice's log-likelihood by its number of tokens.
    length_normalize: bool = False
    #: on a CPU, run float32 linear layers on oneDNN's prepacked weights (:mod:`.packing`).
    pack_weights: bool = True

    def answer_settings(self) -> dict[str, Any]:
        if self.scoring == "loglik":
            return {"scoring": "loglik", "length_normalize": self.length_normalize}
        return {"scoring": "generate", **self.decoding.answer_settings()}


@dataclass
class Entry:
    """One evaluation entry: a dataset's split, told apart from others by ``label``."""

    label: str
    name: str
    split: str
    dataset: Dataset
    examples: Sequence[Example]
    parser: AnswerParser
    options: Mapping[str, Any] = field(default_factory=dict)


def entry_labels(keys: Sequence[tuple[str, str]]) -> list[str]:
    """``<name>-<split>`` for each entry; a repeated pair gets ``-2``, ``-3``... in order, so that
    two entries of one dataset and split (two ``json`` files, two ``arith`` seeds) never share a
    predictions file."""
    seen: dict[tuple[str, str], int] = {}
    labels = []
    for name, split in keys:
        seen[(name, split)] = seen.get((name, split), 0) + 1
        n = seen[(name, split)]
        labels.append(f"{name}-{split}" + (f"-{n}" if n > 1 else ""))
    return labels


@dataclass
class Work:
    """An entry's prompts, the records read back from its predictions file, and the items left."""

    prompts: list[str]
    done: dict[int, dict[str, Any]]
    pending: list[int]


def plan(template: PromptTemplate, entry: Entry, store: PredictionStore | None = None) -> Work:
    """``entry``'s :class:`Work`; with a ``store``, what it holds is read back (and repaired) by
    the main process, and the others take what it found."""
    procs = processes()
    prompts = [template.eval_prompt(ex) for ex in entry.examples]
    done = procs.from_main(store.load(prompts) if store is not None and procs.main else {})
    return Work(prompts, done, [i for i in range(len(prompts)) if i not in done])


def adapter_identity(model: Any) -> dict[str, Any] | None:
    """The adapter's name, config, sites and a hash of its tensors (None: no adapter): two
    evaluations with different adapter weights never share predictions."""
    describe = getattr(model, "describe", None)
    tensors = getattr(model, "adapter_state_dict", None)
    if describe is None or tensors is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return {**describe(), "weights_sha256": digest.hexdigest()}


@contextlib.contextmanager
def prepared(model: Any, merge: bool) -> Iterator[bool]:
    """The model in eval mode (dropout off) and, with ``merge``, its adapter folded into the
    weights when the adapter can be (LoRA): no extra compute per token. Both are undone on exit.
    Yields whether the adapter was merged."""
    was_training = model.training
    model.eval()
    can_merge = (
        merge and hasattr(model, "merge") and not getattr(model, "merged", True)
        and callable(getattr(getattr(model, "adapter", None), "merge", None))
    )
    if can_merge:
        model.merge(keep_original=True)
    try:
        yield can_merge
    finally:
        if can_merge:
            model.unmerge()
        model.train(was_training)


def _choices(entry: Entry, example: Example, index: int) -> list[tuple[str, str]]:
    choices = entry.dataset.choices(example)
    if not choices:  # lladapt.evaluation.suite.check_entries reports this before any work
        raise ConfigError([ErrorItem(
            "eval.scoring", f"dataset '{entry.name}' supplies no answer choices (item {index})")])
    return list(choices.items())


def _record(template: PromptTemplate, prompt: str, index: int, generated: Generated) -> dict[str, Any]:
    return {"index": index, "response": template.extract_response(prompt + generated.text),
            "generated_tokens": generated.tokens}


def _generate_records(
    model: Any, tokenizer: PreTrainedTokenizerBase, template: PromptTemplate, entry: Entry,
    prompts: Sequence[str], batch: Sequence[int], decoding: Decoding,
) -> list[dict[str, Any]]:
    generated = generate_batch(model, tokenizer, [prompts[i] for i in batch], decoding)
    return [_record(template, prompts[i], i, g) for i, g in zip(batch, generated, strict=True)]


def _loglik_records(
    model: Any, tokenizer: PreTrainedTokenizerBase, entry: Entry, prompts: Sequence[str],
    batch: Sequence[int], evaluation: Evaluation,
) -> list[dict[str, Any]]:
    choices = {i: _choices(entry, entry.examples[i], i) for i in batch}
    pairs = [(prompts[i], text) for i in batch for _, text in choices[i]]
    scores = continuation_logliks(model, tokenizer, pairs, evaluation.decoding.batch_size)
    records, at = [], 0
    for i in batch:
        n = len(choices[i])
        mine = scores[at : at + n]
        at += n
        best = pick(mine, evaluation.length_normalize)
        records.append({"index": i, "response": choices[i][best][0], "generated_tokens": 0,
                        "logliks": [round(s, 6) for s, _ in mine]})
    return records


def evaluate_entry(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    entry: Entry,
    evaluation: Evaluation,
    *,
    store: PredictionStore | None = None,
    progress: Progress | None = None,
    work: Work | None = None,
    stream: SharedStream | None = None,
) -> Score:
    """Evaluate ``entry``; with a ``store``, resume from and append to its predictions file
    (``work``: what :func:`plan` found in it, read again when not given). The caller puts the
    model in eval mode (:func:`prepared`). On the ``continuous`` path the items go through
    ``stream`` (a batcher of their own when not given), where :func:`evaluate_entries` may have
    queued them already.

    Several processes (``accelerate launch``) share the batches round by round: in each round
    process ``r`` computes the round's ``r``-th batch, the main process appends the round's
    batches to the file in batch order, so the file and the score are those of one process
    (the evaluator is batch-invariant: an item's answer does not depend on its batch). One
    process on the ``continuous`` path (:func:`.generation.generation_path`) appends the items
    of each step that finished some."""
    procs = processes()
    progress = (progress or NoProgress()) if procs.main else NoProgress()
    started = time.perf_counter()
    examples = entry.examples
    work = work or plan(template, entry, store)
    prompts, done, pending = work.prompts, work.done, work.pending
    records: dict[int, dict[str, Any]] = dict(done)
    path = None if evaluation.scoring == "loglik" else generation_path(model, evaluation.decoding)
    progress.start(entry.label, len(examples), len(done),
                   sum(judge(entry.parser, r["response"], examples[i].answer)[1] for i, r in done.items()))
    try:
        with packed_linears(model, evaluation.pack_weights and bool(pending)):
            rounds = _rounds(model, tokenizer, template, entry, work, evaluation, path, stream)
            for new, seconds in _timed(rounds):
                _judge_batch(new, entry, prompts, seconds)
                for batch_records in procs.gather(new):  # in process order: the batches' order
                    records.update((record["index"], record) for record in batch_records)
                    if store is not None and procs.main and batch_records:
                        store.append(sorted(batch_records, key=lambda r: r["index"]))
                    progress.advance(len(batch_records), sum(r["correct"] for r in batch_records))
    finally:
        progress.stop()
        if store is not None:
            store.close()
    result = _score(entry, records, done, started)
    result.generation_path = path
    return result


def evaluate_entries(
    model: Any, tokenizer: PreTrainedTokenizerBase, template: PromptTemplate,
    jobs: Sequence[tuple[Entry, Evaluation, PredictionStore | None]], *,
    progress: Progress | None = None, starting: Callable[[Entry], None] = lambda entry: None,
) -> Iterator[Score]:
    """:func:`evaluate_entry` for each ``(entry, evaluation, store)`` in turn (``starting`` hears
    of each first). Every store is read before any item is computed, and the entries on the
    ``continuous`` path share one batcher (:class:`.streaming.SharedStream`): the slots an
    entry's last rows free take the next entry's first prompts. The answers are the same; an
    entry's ``seconds`` then include the next entry's rows computed during its own."""
    works = [plan(template, entry, store) for entry, _, store in jobs]
    stream = _shared_stream(model, tokenizer, [(entry, evaluation, work) for (entry, evaluation, _), work
                                               in zip(jobs, works, strict=True)])
    for (entry, evaluation, store), work in zip(jobs, works, strict=True):
        starting(entry)
        yield evaluate_entry(model, tokenizer, template, entry, evaluation, store=store,
                             progress=progress, work=work, stream=stream)


def _shared_stream(model: Any, tokenizer: PreTrainedTokenizerBase,
                   jobs: Sequence[tuple[Entry, Evaluation, Work]]) -> SharedStream | None:
    """One stream holding the pending items of every entry on the ``continuous`` path, in
    order (None for fewer than two such entries, or different batch sizes)."""
    streamed = [(entry, evaluation.decoding, work) for entry, evaluation, work in jobs
                if work.pending and evaluation.scoring == "generate"
                and generation_path(model, evaluation.decoding) == "continuous"]
    if len(streamed) < 2 or len({decoding.batch_size for _, decoding, _ in streamed}) > 1:
        return None
    stream = SharedStream(model, tokenizer, streamed[0][1])
    for entry, decoding, work in streamed:
        _queue(stream, tokenizer, entry, work, decoding)
    return stream


def _token_batches(tokenizer: PreTrainedTokenizerBase, work: Work,
                   decoding: Decoding) -> tuple[list[list[int]], list[list[int]]]:
    """Every prompt's token ids, and the pending items in length-sorted batches."""
    ids = tokenizer(work.prompts)["input_ids"] if work.pending else []
    return ids, length_sorted_batches(work.pending, [len(i) for i in ids], decoding.batch_size,
                                      sort=decoding.sort_by_length)


def _queue(stream: SharedStream, tokenizer: PreTrainedTokenizerBase, entry: Entry, work: Work,
           decoding: Decoding) -> None:
    """Add ``entry``'s pending items to ``stream``, longest first, with the prefix every prompt
    of the entry shares (all items, not only those pending: a resumed run computes its items as
    the first run did)."""
    ids, batches = _token_batches(tokenizer, work, decoding)
    stream.add(entry.label, [(i, ids[i]) for batch in batches for i in batch], decoding,
               shared_prefix(ids))


def _rounds(
    model: Any, tokenizer: PreTrainedTokenizerBase, template: PromptTemplate, entry: Entry,
    work: Work, evaluation: Evaluation, path: str | None, stream: SharedStream | None,
) -> Iterator[list[dict[str, Any]]]:
    """This process's new records, one list a round: its batch of the round (empty when the
    round has none for it), or on the ``continuous`` path the items each step finished."""
    procs = processes()
    decoding = evaluation.decoding
    prompts = work.prompts
    if path == "continuous":
        stream = stream or SharedStream(model, tokenizer, decoding)
        if entry.label not in stream:
            _queue(stream, tokenizer, entry, work, decoding)
        for finished in stream.finished(entry.label):
            yield [_record(template, prompts[i], i, g) for i, g in finished]
        return
    _, batches = _token_batches(tokenizer, work, decoding)
    for first in range(0, len(batches), procs.world):
        mine = batches[first + procs.rank] if first + procs.rank < len(batches) else []
        if not mine:
            yield []
        elif evaluation.scoring == "loglik":
            yield _loglik_records(model, tokenizer, entry, prompts, mine, evaluation)
        else:
            yield _generate_records(model, tokenizer, template, entry, prompts, mine, decoding)


def _timed(items: Iterable[T]) -> Iterator[tuple[T, float]]:
    """Each of ``items`` with the seconds spent making it (not the time the caller spends
    between two)."""
    iterator = iter(items)
    while True:
        began = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        yield item, time.perf_counter() - began


def _judge_batch(new: list[dict[str, Any]], entry: Entry, prompts: Sequence[str], seconds: float) -> None:
    """Parse and judge a batch's (or a step's) new records in place: each gets its prompt hash,
    answer, prediction, verdict and share of the ``seconds`` that computed them."""
    for record in new:
        ex = entry.examples[record["index"]]
        prediction, ok = judge(entry.parser, record["response"], ex.answer)
        record.update(prompt_sha=prompt_hash(prompts[record["index"]]), source=ex.source,
                      answer=ex.answer, prediction=prediction, correct=ok,
                      seconds=round(seconds / len(new), 4))


def _score(entry: Entry, records: dict[int, dict[str, Any]], done: dict[int, dict[str, Any]],
           started: float) -> Score:
    """The entry's Score over every record, those computed now and those read back (``done``)."""
    examples = entry.examples
    result = Score(dataset=entry.name, total=len(examples), correct=0, unparsed=0, seconds=0.0,
                   generated_tokens=0, label=entry.label, split=entry.split,
                   computed=len(examples) - len(done))
    for i, ex in enumerate(examples):
        record = records[i]
        prediction, ok = judge(entry.parser, record["response"], ex.answer)
        result.correct += int(ok)
        result.unparsed += int(prediction is None)
        result.generated_tokens += int(record.get("generated_tokens", 0))
        result.predictions.append(Prediction(i, ex.source, ex.answer, record["response"], prediction,
                                             ok, int(record.get("generated_tokens", 0))))
    # this call's time and, for items read back, their share of the time that computed them in
    # an earlier run: an entry's seconds do not restart at a resume (predictions written before
    # records carried ``seconds`` count 0).
    result.seconds = time.perf_counter() - started + sum(
        float(done[i].get("seconds", 0.0)) for i in done)
    return result
