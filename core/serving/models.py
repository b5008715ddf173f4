"""The models a server holds: one base model loaded once, and each adapter either gated on the
shared instance (adapters with ``share``: LoRA, series, parallel) or on an instance of its own
that shares the base's weight tensors (prefix and prompt tuning, and any adapter without
``share``), each with its lane (:mod:`.lanes`)."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lladapt.adapters.rows import BASE_SLOT, RowSelection
from lladapt.components.interfaces import PromptTemplate
from lladapt.serving.lanes import Lane, OwnLane, SharedLane
from lladapt.serving.spec import BASE_NAME, ServeSpec

__all__ = ["ServedModel", "ServedModels", "load_served", "sharing_weights"]

_COUNT_LOCK = threading.Lock()


@dataclass
class ServedModel:
    """One name a client can ask for."""

    name: str
    #: the adapter's kind (``lora``...), None for the base model.
    kind: str | None
    folder: str | None
    template: PromptTemplate
    lane: Lane
    slot: int
    #: True when its requests share forward passes with the base and other adapters.
    shares_base: bool


@dataclass
class ServedModels:
    """Every served model by name, the tokenizer, and what requests are checked against."""

    models: dict[str, ServedModel]
    tokenizer: Any
    #: the longest prompt + answer the base model takes (tokens).
    context: int
    stop_ids: list[int]
    lanes: list[Lane]
    #: requests finished, by finish reason (``stop``, ``length``, ``cancelled``, ``error``).
    finished: Counter[str] = field(default_factory=Counter)

    def count_finished(self, reason: str | None) -> None:
        with _COUNT_LOCK:
            self.finished[reason or "unknown"] += 1

    def close(self, timeout: float | None = None) -> None:
        """Let every lane finish its requests, then stop it."""
        for lane in self.lanes:
            lane.close(timeout)


def sharing_weights(model: Any) -> Any:
    """A copy of ``model``'s modules that shares its parameters and buffers (no weight is
    copied): hooks added to one instance's modules do not run in the other."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)


def load_served(spec: ServeSpec, *, max_rows: int = 32) -> ServedModels:
    """Load the base model once and every adapter of ``spec`` onto it; start the lanes."""
    from lladapt.adapters.model import attach_saved, read_saved
    from lladapt.data.loading import get_template
    from lladapt.evaluation.generation import stop_token_ids
    from lladapt.models.loading import load_model

    loaded = load_model(spec.model)
    pristine = loaded.model.eval()
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    shared = sharing_weights(pristine)
    selection = RowSelection()
    shared_lane = SharedLane(shared, tokenizer, selection, pad_id=pad_id, max_rows=max_rows)
    models = {BASE_NAME: ServedModel(BASE_NAME, None, None, get_template(spec.template), shared_lane,
                                     BASE_SLOT, True)}
    lanes: list[Lane] = [shared_lane]
    for slot, (name, entry) in enumerate(spec.adapters.items()):
        saved = read_saved(shared, loaded.layout, entry.folder)
        shares = callable(getattr(saved.adapter, "share", None))
        target = shared if shares else sharing_weights(pristine)
        adapted = attach_saved(target, loaded.layout, saved).eval()
        if shares:
            saved.adapter.share(selection.gate(slot))
            lane: Lane = shared_lane
        else:
            lane = OwnLane(name, adapted, tokenizer, pad_id=pad_id, max_rows=max_rows)
            lanes.append(lane)
        models[name] = ServedModel(name, saved.adapter.name, str(entry.folder),
                                   get_template(entry.template), lane, slot, shares)
    for lane in lanes:
        lane.start()
    context = int(getattr(pristine.config, "max_position_embeddings", 0) or 2048)
    return ServedModels(models, tokenizer, context, stop_token_ids(pristine, tokenizer), lanes)
