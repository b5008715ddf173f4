"""Every place lladapt leans on transformers' internals, in one module.

transformers renames arguments and attributes between minor releases (5.24 renamed the causal-LM
forward argument ``past_key_values`` to ``cache``, to be removed in 5.40). Code elsewhere in
lladapt asks this module instead of spelling a name, so the next upstream change is a one-place
fix. Each function says what it relies on, and since which release.

Tested range: see ``pyproject.toml`` and CONTRIBUTING.md ("Dependency bounds").
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "CACHE",
    "CACHE_NAMES",
    "activation_checkpointing",
    "bypassed_output_head",
    "cache_argument",
    "RowCache",
    "cache_length",
    "dynamic_cache",
    "enable_activation_checkpointing",
    "forward_parameters",
    "is_cache",
    "is_static_cache",
    "missing_arguments",
    "name_or_path",
    "output_cache",
    "take_cache",
]

#: Names under which a causal LM's forward takes its KV cache, newest first. transformers 5.24
#: renamed ``past_key_values`` to ``cache`` (``deprecate_kwarg`` still maps the old name until
#: 5.40); older 5.x releases know only ``past_key_values``.
CACHE_NAMES: tuple[str, ...] = ("cache", "past_key_values")

#: Placeholder for "the KV cache argument, whatever this release calls it" in lists of forward
#: arguments an adapter needs (see :func:`missing_arguments`).
CACHE = "<kv cache>"


def forward_parameters(model: torch.nn.Module | Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """The named parameters of ``model.forward`` (or of a callable). transformers decorates its
    forwards with ``functools.wraps``, so the signature is the real one; a catch-all ``**kwargs``
    is not counted as taking any particular name."""
    forward = getattr(model, "forward", model)
    return inspect.signature(forward).parameters


def cache_argument(model: torch.nn.Module | Callable[..., Any]) -> str | None:
    """The name ``model.forward`` takes its KV cache by (``cache`` or ``past_key_values``), or
    None when it takes none."""
    params = forward_parameters(model)
    return next((name for name in CACHE_NAMES if name in params), None)


def missing_arguments(model: torch.nn.Module, needed: tuple[str, ...]) -> list[str]:
    """Which of ``needed`` the model's forward does not take by name. :data:`CACHE` stands for
    the KV cache under either spelling and is reported as ``past_key_values`` (the name users of
    every release know)."""
    params = forward_parameters(model)
    missing = []
    for name in needed:
        if name == CACHE:
            if cache_argument(model) is None:
                missing.append("past_key_values (or cache)")
        elif name not in params:
            missing.append(name)
    return missing


def take_cache(call: MutableMapping[str, Any]) -> Any:
    """Remove the KV cache from a forward call's keyword arguments, under either name, and
    return it (None when absent). ``generate`` passes it as ``cache`` from 5.24 on, users may
    still pass ``past_key_values``; both mean the same."""
    found = None
    for name in CACHE_NAMES:
        value = call.pop(name, None)
        if value is not None:
            found = value
    return found


def output_cache(outputs: Any) -> Any:
    """The KV cache a model returned: ``outputs.cache`` from 5.24 on, ``past_key_values`` before."""
    for name in CACHE_NAMES:
        value = getattr(outputs, name, None)
        if value is not None:
            return value
    return None


def activation_checkpointing(model: torch.nn.Module) -> bool:
    """Whether gradient (activation) checkpointing is on. transformers 5 added
    ``is_activation_checkpointing`` and deprecated ``is_gradient_checkpointing`` (a FutureWarning
    on every read); read the new one where it exists. Looked up on the class: the names are
    properties, and ``hasattr`` on the instance would run (and warn)."""
    for flag in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), flag):
            return bool(getattr(model, flag))
    return False


def enable_activation_checkpointing(model: torch.nn.Module) -> bool:
    """Turn on activation (gradient) checkpointing with non-reentrant ``torch.utils.checkpoint``;
    False when the model has no way to (a model that is not a transformers ``PreTrainedModel``).

    transformers 5.x added ``activation_checkpointing_enable(activation_checkpointing_kwargs=)``
    and deprecated ``gradient_checkpointing_enable(gradient_checkpointing_kwargs=)`` (a
    FutureWarning on every call, removal in 6). Before 5.x-new the old name is the only one.
    Input embeddings are made to require grad (the frozen base would otherwise cut the graph at
    the first checkpointed layer); the new method does this itself, the call is idempotent."""
    for method, keyword in (
        ("activation_checkpointing_enable", "activation_checkpointing_kwargs"),
        ("gradient_checkpointing_enable", "gradient_checkpointing_kwargs"),
    ):
        enable = getattr(model, method, None)
        if enable is not None:
            enable(**{keyword: {"use_reentrant": False}})
            require_grads = getattr(model, "enable_input_require_grads", None)
            if require_grads is not None:
                require_grads()
            return True
    return False


def dynamic_cache(pairs: list[tuple[torch.Tensor, torch.Tensor]], config: Any) -> Any:
    """A ``DynamicCache`` holding one (key, value) pair per layer. transformers 5 takes the pairs
    as the first positional argument (``ddp_cache_data``) and the model config to pick each
    layer's cache type."""
    from transformers import DynamicCache

    return DynamicCache(pairs, config=config)


def is_cache(obj: Any) -> bool:
    """Whether ``obj`` is a transformers ``Cache`` (transformers 5 dropped tuple caches)."""
    return hasattr(obj, "get_seq_length")


def is_static_cache(cache: Any) -> bool:
    """Whether ``cache`` has a fixed size (``StaticCache`` and its kin mark themselves
    ``is_compileable``); such a cache is sized before any virtual token is added."""
    return bool(getattr(cache, "is_compileable", False))


def cache_length(cache: Any) -> int:
    """Tokens already in a KV cache (0 for None)."""
    return 0 if cache is None else int(cache.get_seq_length())


def name_or_path(model: torch.nn.Module) -> str | None:
    """Where ``model`` was loaded from (hub id or folder), as ``from_pretrained`` records it in the
    private ``config._name_or_path``; None for a model built from a config."""
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or None


#: config attributes of causal LMs that transform the logits after ``lm_head`` (Gemma 2's soft
#: capping, Cohere's scale, ...): with any of them set the head cannot be bypassed.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


@contextlib.contextmanager
def bypassed_output_head(model: torch.nn.Module) -> Iterator[torch.nn.Linear | None]:
    """While active, ``model(...).logits`` are the final hidden states (after the last norm), not
    the vocabulary logits, and the context yields the output head (``lm_head``), so the caller
    can apply it only where it needs logits (:func:`lladapt.training.loss.chunked_summed_loss`).

    Relies on transformers' causal LMs computing ``logits = lm_head(hidden_states)`` as the last
    step of ``forward`` (true of every decoder whose config has none of
    :data:`_LOGIT_TRANSFORMS`); the head is swapped for ``nn.Identity`` through the public
    ``get_output_embeddings`` / ``set_output_embeddings`` and put back on exit. Every hook on the
    model (adapters, prompt tuning) still runs. Yields None, and leaves the model alone, where
    this cannot be done: no such methods, a head that is not a plain frozen ``nn.Linear`` (an
    adapter on it, hooks), or a config that transforms the logits."""
    import torch

    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    config = getattr(model, "config", None)
    plain = (
        type(head) is torch.nn.Linear
        and not head._forward_hooks and not head._forward_pre_hooks
        and not any(p.requires_grad for p in head.parameters())
        and not any(getattr(config, name, None) for name in _LOGIT_TRANSFORMS)
        and callable(getattr(model, "set_output_embeddings", None))
    )
    if not plain:
        yield None
        return
    model.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        model.set_output_embeddings(head)


def _plain_layers(cache: Any) -> list[Any]:
    """The layers of a ``DynamicCache`` whose every layer is a plain ``DynamicLayer`` (keys and
    values ``[batch, heads, length, head_dim]`` in ``.keys`` / ``.values``: transformers 5.x);
    a ``NotImplementedError`` for any other cache (sliding windows, quantized, linear attention)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if layers is None or any(type(layer) is not DynamicLayer for layer in layers):
        raise NotImplementedError("rows can only be merged into a DynamicCache of plain DynamicLayers")
    return list(layers)


def cache_holding(config: Any, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: int) -> Any:
    """A ``DynamicCache`` of plain layers holding, for each of ``rows`` rows, one row's keys and
    values (``layers``: per layer, ``[1, heads, length, head_dim]`` each): a shared prompt prefix
    computed once, ready for the rest of each prompt. ``NotImplementedError`` for a model whose
    cache is not plain layers (see :func:`_plain_layers`)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    if len(_plain_layers(cache)) != len(layers):
        raise ValueError(f"{len(layers)} layers of keys for a model of {len(cache.layers)}")
    for index, (keys, values) in enumerate(layers):  # update copies: the rows do not alias
        cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), index)
    return cache


def plain_layer_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values of a ``DynamicCache`` of plain layers."""
    return [(layer.keys, layer.values) for layer in _plain_layers(cache)]


class RowCache:
    """A KV cache for continuous batching whose rows come and go without copying the cache.

    transformers' ``DynamicCache`` appends each step's keys with ``torch.cat``, which copies the
    whole cache every step (at 16 rows and 300 columns, 15% of a SmolLM2-135M decode step on the
    CPU), and dropping or adding a row copies it again. Here every layer owns buffers
    ``[rows, heads, capacity, head_dim]``; the rows in the batch hold slots ``0..n-1`` and the
    columns ``start..end-1`` (left-padded, as the batcher's attention mask says). A forward writes
    its columns in place at ``end`` and attention reads a view; :meth:`advance` then moves ``end``.
    :meth:`add` copies only the new rows' prefilled keys (right-aligned at ``end``), :meth:`keep`
    moves only the rows that fill freed slots, :meth:`drop_left` moves ``start``. Columns left of
    a row's own hold stale finite values (an earlier row's, or zeros) and are masked out. The
    buffers move (one copy of the window) only when a side runs out of room.

    ``cache`` is what the model's forward takes: a ``DynamicCache`` whose layers are
    ``DynamicLayer`` subclasses writing into the buffers (transformers 5.x's layer protocol:
    ``update``, ``keys`` / ``values``, ``get_seq_length``). Plain attention layers only (a
    ``NotImplementedError`` otherwise)."""

    def __init__(self, config: Any, rows: int):
        from transformers import DynamicCache

        self.cache = DynamicCache(config=config)
        layer = _slot_layer_class()
        self.cache.layers = [layer(self, i) for i in range(len(_plain_layers(self.cache)))]
        self.rows, self.n, self.start, self.end = rows, 0, 0, 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @property
    def width(self) -> int:
        return self.end - self.start

    def add(self, prefilled: Any) -> None:
        """Append the rows of ``prefilled`` (a just-prefilled ``DynamicCache`` of plain layers)."""
        layers = _plain_layers(prefilled)
        count, length = layers[0].keys.shape[0], layers[0].keys.shape[-2]
        if not self.keys:
            self._allocate(layers[0].keys)
        if length > self.end:  # no room on the left: move the window right
            self._move(start=length - self.width, capacity=length + self.width + 64)
        self.start = min(self.start, self.end - length)
        rows, columns = slice(self.n, self.n + count), slice(self.end - length, self.end)
        for store_k, store_v, layer in zip(self.keys, self.values, layers, strict=True):
            store_k[rows, :, columns] = layer.keys
            store_v[rows, :, columns] = layer.values
        self.n += count

    def advance(self, columns: int = 1) -> None:
        """The forward just run wrote ``columns`` columns at ``end``."""
        self.end += columns

    def reserve(self, columns: int = 1) -> None:
        """Room for ``columns`` more columns right of ``end`` (the window moves when there is none)."""
        if self.end + columns > self.keys[0].shape[2]:
            self._move(start=0, capacity=2 * self.width + columns + 64)

    def keep(self, live: list[int]) -> list[int]:
        """Keep only the rows at ``live`` (ascending): the live rows beyond the new count move into
        the freed slots below it. Returns the old index of the row now at each slot."""
        order = list(range(len(live)))
        holes = [slot for slot in order if slot not in set(live)]
        movers = [slot for slot in live if slot >= len(live)]
        for hole, source in zip(holes, movers, strict=True):
            order[hole] = source
            for store in (*self.keys, *self.values):
                store[hole, :, self.start : self.end] = store[source, :, self.start : self.end]
        self.n = len(live)
        if not live:
            self.start = self.end
        return order

    def drop_left(self, columns: int) -> None:
        """Forget the first ``columns`` columns (padding in every row left)."""
        self.start += max(columns, 0)

    def _allocate(self, like: torch.Tensor) -> None:
        import torch

        shape = (self.rows, like.shape[1], 64, like.shape[-1])
        self.keys = [torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in self.cache.layers]
        self.values = [torch.zeros_like(k) for k in self.keys]

    def _move(self, start: int, capacity: int) -> None:
        """New buffers of ``capacity`` columns holding the window from column ``start``."""

        width = self.width
        for stores in (self.keys, self.values):
            for i, old in enumerate(stores):
                new = old.new_zeros((*old.shape[:2], max(capacity, start + width), old.shape[-1]))
                new[: self.n, :, start : start + width] = old[: self.n, :, self.start : self.end]
                stores[i] = new
        self.start, self.end = start, start + width


@functools.cache
def _slot_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        """Layer ``index`` of a :class:`RowCache`: ``update`` writes the new columns in place and
        returns views of the window."""

        def __init__(self, owner: RowCache, index: int):
            super().__init__()
            self.owner, self.index = owner, index

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            owner, n = self.owner, key_states.shape[0]
            columns = slice(owner.end, owner.end + key_states.shape[-2])
            keys, values = owner.keys[self.index], owner.values[self.index]
            keys[:n, :, columns] = key_states
            values[:n, :, columns] = value_states
            self.keys = keys[:n, :, owner.start : columns.stop]
            self.values = values[:n, :, owner.start : columns.stop]
            self.is_initialized = True
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.owner.width

    return SlotLayer
