"""Attach an adapter to a frozen base model, and the :class:`AdaptedModel` that holds the pair.

``attach(model, layout, adapter, placement)`` freezes every base parameter, asks the placement for
its sites (``Placement.resolve``), checks that each module site names a Linear-like module of the
model, and lets the adapter insert its modules (``Adapter.attach``). The tensors that did not exist
before (found by identity, so an adapter needs no bookkeeping for it) are the adapter's state:
they alone require grad and they alone are saved.

The adapter contract for saving, loading and merging
----------------------------------------------------
Beyond :meth:`lladapt.Adapter.attach` an adapter may implement these optional methods; lladapt
looks them up with ``getattr`` and says clearly when one is missing:

``merge(keep_original: bool = True) -> None`` / ``unmerge() -> None``
    Fold the adapter into the base weights and back (LoRA). An adapter that cannot be merged
    (a non-linear bottleneck) leaves them out; :meth:`AdaptedModel.merge` then raises
    :class:`~lladapt.AdapterError`.

``to_peft(state: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]] | None``
    PEFT-format export: the fields of PEFT's ``adapter_config.json`` (``peft_type``, ...) and the
    tensors under PEFT's keys, given the adapter's state keyed by the module paths of the base
    model (``model.layers.0.self_attn.q_proj.lora_A.weight``). Return None (or leave it out) when
    PEFT has no equivalent. When present, :meth:`AdaptedModel.save_adapter` writes PEFT's format,
    so that ``peft.PeftModel.from_pretrained(base, folder)`` loads the folder.

``from_peft(peft_config: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]``
    The inverse: PEFT's tensors back to the adapter's state keys. A classmethod; an adapter with
    ``to_peft`` needs it (lladapt reads its own PEFT-format folders back through it), and with it
    an adapter trained with PEFT can be imported (:func:`lladapt.adapters.model.load_adapter` with a
    folder PEFT wrote); an adapter that also wants that must implement ``sites_from_peft``:

``sites_from_peft(peft_config: dict, tensors: dict[str, Tensor], layout) -> (Config, list[Site])``
    Classmethod: the adapter's Config and sites described by a folder PEFT wrote. lladapt picks
    the adapter by its class attribute ``peft_type`` (``"LORA"``, ``"PREFIX_TUNING"``...).

``detach() -> None``
    Remove what ``attach`` inserted, restoring the base model (used by
    :meth:`AdaptedModel.unload`, and to clean up after an ``attach`` that raised).

``share(gate) -> None``
    Apply only to the rows ``gate()`` names, the adapter's modules moved out of the base's, so
    that several adapters serve one batch over one base (:mod:`lladapt.adapters.rows`).

docs/plugins.md states each contract with an example (the IA3 adapter of
``examples/lladapt-ia3``).

Everything else is generic: the state is every tensor the adapter created, keyed by its path in
the base model and saved as ``base_model.model.<path>`` (PEFT's and the paper code's key scheme),
with the adapter's name, validated Config, placement and resolved sites in the file's metadata, so
that loading rebuilds the same adapter at the same sites and copies the tensors in (bit-identical
outputs). The file format itself lives in :mod:`lladapt.adapters.files`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lladapt.adapters.build import build_adapter, build_placement, default_placement
from lladapt.adapters.count import count_module_parameters
from lladapt.adapters.files import (
    PAPER_WEIGHTS_FILE,
    WEIGHTS_FILE,
    SavedAdapter,
    check_config_file,
    copy_state,
    load_adapter_state,
    read_adapter,
    save_adapter,
)
from lladapt.adapters.paper_import import read_paper_checkpoint
from lladapt.adapters.sites import check_sites
from lladapt.common.errors import AdapterError
from lladapt.components.interfaces import Adapter, Layout, Placement, Site

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Mapping

    from lladapt.config import ComponentSection

__all__ = [
    "AdaptedModel",
    "attach",
    "attach_from_config",
    "attach_saved",
    "load_adapter",
    "load_paper_checkpoint",
    "read_saved",
]


def attach_from_config(
    model: nn.Module,
    layout: Layout,
    adapter_section: ComponentSection,
    placement_section: ComponentSection | None = None,
) -> AdaptedModel:
    """Attach the adapter a run config names, at its placement (None: the adapter's default).

    ``adapter_section`` / ``placement_section`` are ``lladapt.config.ComponentSection`` objects
    (``.name`` and the validated component Config in ``.options``, as ``load_config`` leaves them);
    plain ``{"name": ..., **fields}`` mappings work too. Works on a model on the meta device (no
    memory), which is how ``lladapt params`` counts a 7B model's adapter.
    """
    adapter = build_adapter(adapter_section)
    placement = build_placement(placement_section) if placement_section is not None else None
    return attach(model, layout, adapter, placement)


def _tensor_ids(model: nn.Module) -> set[int]:
    return {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}


def attach(
    model: nn.Module,
    layout: Layout,
    adapter: Adapter,
    placement: Placement | None = None,
    *,
    sites: Sequence[Site] | None = None,
) -> AdaptedModel:
    """Freeze ``model``, resolve ``placement`` (None: the adapter's default) and attach ``adapter``.

    ``sites`` bypasses the placement (loading a saved adapter re-attaches at its recorded sites).
    Returns the :class:`AdaptedModel` wrapping ``model``; only the adapter's tensors require grad.
    """
    if getattr(adapter, "_lladapt_attached", False):
        raise AdapterError(
            f"this '{adapter.name}' adapter instance is attached already; build a new one"
        )
    if sites is None:
        placement = placement if placement is not None else default_placement(adapter)
        sites = placement.resolve(layout, adapter)
    sites = list(sites)
    check_sites(model, layout, sites, adapter)
    flags = [(param, param.requires_grad) for param in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    before = _tensor_ids(model)
    try:
        adapter.attach(model, layout, sites)
    except BaseException as exc:
        # leave the model as it was: take out what was inserted, restore the grad flags
        detach = getattr(adapter, "detach", None)
        if detach is not None:
            with contextlib.suppress(Exception):  # the attach error is the one to report
                detach()
        for param, flag in flags:
            param.requires_grad_(flag)
        if isinstance(exc, (OverflowError, RuntimeError, TypeError, ValueError)) and not isinstance(exc, AdapterError):
            # torch refusing the tensors a config asks for (r = 10**30, no memory for them)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise AdapterError(
                f"adapter '{adapter.name}' could not be attached with its config "
                f"({adapter.config.model_dump(mode='json')}): {type(exc).__name__}: {first}"
            ) from exc
        raise
    adapter._lladapt_attached = True  # type: ignore[attr-defined]
    names = [n for n, p in model.named_parameters() if id(p) not in before]
    buffers = [n for n, b in model.named_buffers() if id(b) not in before]
    if not names and not buffers:
        raise AdapterError(f"adapter '{adapter.name}' attached but created no parameters")
    for name in names:
        model.get_parameter(name).requires_grad_(True)
    adapted = AdaptedModel(model, layout, adapter, placement, sites, names, buffers)
    # new modules start in training mode: give them the model's (no dropout in an eval model)
    adapted.train(model.training)
    return adapted


# --------------------------------------------------------------------------- the adapted model


class AdaptedModel(nn.Module):
    """A frozen base model with one adapter attached.

    ``forward`` and ``generate`` pass straight through to the base model, whose modules now carry
    the adapter; attribute lookups that miss fall through to the base model too (``config``,
    ``device``, ``gradient_checkpointing_enable``...).
    """

    def __init__(
        self,
        base_model: nn.Module,
        layout: Layout,
        adapter: Adapter,
        placement: Placement | None,
        sites: Sequence[Site],
        parameter_names: Sequence[str],
        buffer_names: Sequence[str] = (),
        run_id: str | None = None,
    ):
        super().__init__()
        self.base_model = base_model
        self.layout = layout
        self.adapter = adapter
        self.placement = placement
        self.sites: list[Site] = list(sites)
        self.parameter_names: list[str] = list(parameter_names)
        self.buffer_names: list[str] = list(buffer_names)
        #: identifies the training run this adapter belongs to; saving into a folder that holds
        #: another run's adapter needs ``overwrite=True``.
        self.run_id: str = run_id or uuid.uuid4().hex[:16]
        self.merged = False

    # -- pass-through
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.base_model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    # -- parameters
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The adapter's parameters (the only ones that require grad)."""
        return [self.base_model.get_parameter(n) for n in self.parameter_names]

    def named_adapter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The adapter's state: every tensor it created, keyed by its path in the base model."""
        for name in self.parameter_names:
            yield name, self.base_model.get_parameter(name)
        for name in self.buffer_names:
            yield name, self.base_model.get_buffer(name)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.detach() for name, t in self.named_adapter_tensors()}

    def num_parameters(self, trainable_only: bool = False, *, only_trainable: bool | None = None,
                       exclude_embeddings: bool = False) -> int:
        """All parameters (base + adapter), or only the trainable ones (the adapter's).

        ``only_trainable`` and ``exclude_embeddings`` are the arguments of transformers'
        ``PreTrainedModel.num_parameters`` (its ``Trainer`` calls it for the FLOP count), so an
        adapted model can stand in for a transformers model there."""
        if only_trainable is not None:
            trainable_only = only_trainable
        if exclude_embeddings:
            return self.base_model.num_parameters(only_trainable=trainable_only, exclude_embeddings=True)
        return count_module_parameters(self.base_model, trainable_only=trainable_only)

    def parameter_counts(self) -> dict[str, Any]:
        trainable = self.num_parameters(trainable_only=True)
        total = self.num_parameters()
        return {
            "trainable": trainable,
            "total": total,
            "base": total - trainable,
            "trainable_percent": 100.0 * trainable / total if total else 0.0,
        }

    # -- merging
    #: why an adapter may lack an optional method, per method (the error says it).
    _MISSING_METHOD_REASONS: dict[str, str] = {
        "merge": "only adapters that are linear in the input, like LoRA, fold into the weights",
        "unmerge": "only adapters that are linear in the input, like LoRA, fold into the weights",
        "detach": "it cannot remove what it inserted; build a fresh base model instead",
    }

    def _adapter_method(self, name: str, action: str) -> Any:
        method = getattr(self.adapter, name, None)
        if method is None:
            raise AdapterError(
                f"adapter '{self.adapter.name}' cannot be {action}: it has no `{name}()` "
                f"({self._MISSING_METHOD_REASONS[name]})"
            )
        return method

    def merge(self, keep_original: bool = True) -> None:
        """Fold the adapter into the base weights (outputs unchanged, no extra compute).
        ``keep_original`` keeps a copy of each changed weight so that :meth:`unmerge` restores it
        exactly; without it unmerge subtracts (equal up to rounding)."""
        if self.merged:
            raise AdapterError("the adapter is merged already")
        self._adapter_method("merge", "merged")(keep_original=keep_original)
        self.merged = True

    def unmerge(self) -> None:
        """Undo :meth:`merge`."""
        if not self.merged:
            raise AdapterError("the adapter is not merged")
        self._adapter_method("unmerge", "unmerged")()
        self.merged = False

    def unload(self) -> nn.Module:
        """Remove the adapter (``merge()`` first to keep its effect) and return the base model."""
        self._adapter_method("detach", "detached")()
        return self.base_model

    # -- files
    def save_adapter(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``adapter_config.json`` + ``adapter_model.safetensors`` into ``directory``.
        See :mod:`lladapt.adapters.files`."""
        return save_adapter(self, directory, overwrite=overwrite)

    def load_adapter(self, directory: str | Path) -> None:
        """Copy the tensors saved in ``directory`` into this adapter (same adapter and sites)."""
        load_adapter_state(self, directory)

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, layout: Layout, directory: str | Path
    ) -> AdaptedModel:
        """Attach the adapter saved in ``directory`` to a fresh base model and load its tensors."""
        return load_adapter(model, layout, directory)

    def describe(self) -> dict[str, Any]:
        """The adapter's name, Config, placement and sites (what the saved metadata records)."""
        return {
            "adapter": {"name": self.adapter.name, "config": self.adapter.config.model_dump(mode="json")},
            "placement": None
            if self.placement is None
            else {"name": self.placement.name, "config": self.placement.config.model_dump(mode="json")},
            "sites": [asdict(s) for s in self.sites],
        }


# --------------------------------------------------------------------------- loading


def attach_saved(model: nn.Module, layout: Layout, saved: SavedAdapter) -> AdaptedModel:
    """Attach an adapter read from a folder at its recorded sites and copy its tensors in."""
    adapted = attach(model, layout, saved.adapter, saved.placement, sites=saved.sites)
    check_config_file(adapted, saved.where, saved.config_file)
    adapted.run_id = saved.run_id or adapted.run_id
    copy_state(adapted, saved.state, saved.where)
    return adapted


def load_adapter(model: nn.Module, layout: Layout, directory: str | Path) -> AdaptedModel:
    """Attach the adapter saved in ``directory`` to ``model`` (a fresh base model) and load it.

    Reads folders lladapt wrote, folders PEFT wrote (through the adapter whose ``peft_type``
    matches) and the paper code's ``adapter_model.bin`` folders.
    """
    return attach_saved(model, layout, read_saved(model, layout, directory))


def read_saved(model: nn.Module, layout: Layout, directory: str | Path) -> SavedAdapter:
    """The adapter saved in ``directory`` (lladapt's, PEFT's or the paper code's folder), read
    and checked against ``model`` but not attached: its ``adapter`` says what kind it is."""
    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file() and (directory / PAPER_WEIGHTS_FILE).is_file():
        return read_paper_checkpoint(layout, directory)
    return read_adapter(directory, model, layout)


def load_paper_checkpoint(
    model: nn.Module, layout: Layout, path: str | Path, config: Mapping[str, Any] | None = None
) -> AdaptedModel:
    """Attach the adapter of a paper-code checkpoint to ``model`` and load its tensors.

    ``path`` is the checkpoint folder (``adapter_config.json`` + ``adapter_model.bin``) or the
    ``.bin`` file; ``config`` replaces the folder's ``adapter_config.json`` when given.
    """
    return attach_saved(model, layout, read_paper_checkpoint(layout, path, config))
