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
    an adapter trained with PEFT can be imported (:func:`lladapt.adapter_files.load_adapter` with a
    folder PEFT wrote); an adapter that also wants that must implement ``sites_from_peft``:

``sites_from_peft(peft_config: dict, tensors: dict[str, Tensor], layout) -> (Config, list[Site])``
    Classmethod: the adapter's Config and sites described by a folder PEFT wrote. lladapt picks
    the adapter by its class attribute ``peft_type`` (``"LORA"``, ``"PREFIX_TUNING"``...).

``detach() -> None``
    Remove what ``attach`` inserted, restoring the base model (used by
    :meth:`AdaptedModel.unload`, and to clean up after an ``attach`` that raised).

docs/plugins.md states each contract with an example (the IA3 adapter of
``examples/lladapt-ia3``).

Everything else is generic: the state is every tensor the adapter created, keyed by its path in
the base model and saved as ``base_model.model.<path>`` (PEFT's and the paper code's key scheme),
with the adapter's name, validated Config, placement and resolved sites in the file's metadata, so
that loading rebuilds the same adapter at the same sites and copies the tensors in (bit-identical
outputs). The file format itself lives in :mod:`lladapt.adapter_files`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lladapt.errors import AdapterError, PlacementError
from lladapt.interfaces import Adapter, Layout, Placement, Site
from lladapt.params import count_module_parameters

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.config import ComponentSection

__all__ = [
    "AdaptedModel",
    "attach",
    "attach_from_config",
    "build_adapter",
    "build_placement",
    "site_for_path",
]


# --------------------------------------------------------------------------- building components


def _section_name(section: Any) -> str:
    return section["name"] if isinstance(section, Mapping) else section.name


def build_adapter(section: ComponentSection | Mapping[str, Any]) -> Adapter:
    """An adapter instance from a config section (``name`` + the adapter's fields)."""
    from lladapt.config import component_options
    from lladapt.plugin_manager import get_registry

    cls = get_registry("adapter").get(_section_name(section))
    return cls(component_options(cls, section, "adapter"))


def build_placement(
    section: ComponentSection | Mapping[str, Any], where: str = "placement"
) -> Placement:
    """A placement instance from a config section or a plain ``{"name": ..., ...}`` mapping."""
    from lladapt.config import component_options
    from lladapt.plugin_manager import get_registry

    cls = get_registry("placement").get(_section_name(section))
    return cls(component_options(cls, section, where))


def default_placement(adapter: Adapter) -> Placement:
    """The placement an adapter gets when the config names none (``Adapter.default_placement``)."""
    return build_placement(
        dict(adapter.default_placement), where=f"placement (default of adapter '{adapter.name}')"
    )


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


# --------------------------------------------------------------------------- attaching


def site_for_path(layout: Layout, path: str, mode: str) -> Site:
    """The module Site of a full module path, with its layer and role where the layout knows them
    (for sites read back from a file that names modules, not roles)."""
    layer: int | None = None
    role: str | None = None
    prefix = layout.layers + "."
    if path.startswith(prefix):
        index, _, rel = path[len(prefix):].partition(".")
        if index.isdigit():
            layer = int(index)
            role = next((r for r, p in layout.layer.projections.items() if p == rel), None)
    return Site(path=path, layer=layer, role=role, mode=mode)  # type: ignore[arg-type]


def _is_linear_like(module: nn.Module) -> bool:
    """A Linear, or a quantized stand-in (bitsandbytes Linear4bit / Linear8bitLt)."""
    return (
        isinstance(getattr(module, "in_features", None), int)
        and isinstance(getattr(module, "out_features", None), int)
        and getattr(module, "weight", None) is not None
    )


def _linear_names(layer: nn.Module) -> list[str]:
    return [name for name, m in layer.named_modules() if name and _is_linear_like(m)]


def site_problems(
    model: nn.Module, layout: Layout, sites: Sequence[Site], adapter: Adapter
) -> list[str]:
    """What is wrong with ``sites`` for ``adapter`` on ``model``: a module that does not exist or
    is not Linear-like, a mode the adapter lacks, a site of the wrong kind. A problem that repeats
    in every layer is said once, with the layers it concerns."""
    if not sites:
        return [f"the placement resolved no sites for adapter '{adapter.name}'"]
    by_problem: dict[str, list[int]] = {}
    for site in sites:
        for problem in _problems_of_site(model, layout, site, adapter):
            layers = by_problem.setdefault(problem, [])
            if site.layer is not None:
                layers.append(site.layer)
    return [
        problem.replace(_LAYERS, f" in {_layer_list(layers)}" if layers else "")
        for problem, layers in by_problem.items()
    ]


#: where a problem's layers go in its message, once the sites are grouped.
_LAYERS = "<layers>"


def _problems_of_site(model: nn.Module, layout: Layout, site: Site, adapter: Adapter) -> list[str]:
    """The problems of one site, worded without its layer index (so that layers group)."""
    if site.kind != adapter.site_kind:
        return [
            f"site '{site.path}' is a {site.kind} site; adapter '{adapter.name}' needs "
            f"{adapter.site_kind} sites"
        ]
    if site.kind != "module":
        return []
    problems = []
    if site.mode not in adapter.modes:
        problems.append(
            f"adapter '{adapter.name}' has no mode '{site.mode}' (module "
            f"'{_in_layer(layout, site, site.path)}'{_LAYERS}); its modes: "
            + ", ".join(sorted(adapter.modes))
        )
    for path in (site.path, site.source):
        if path is None:
            continue
        try:
            module = model.get_submodule(path)
        except AttributeError:
            module = None
        if module is None or not _is_linear_like(module):
            problems.append(_missing_module_message(model, layout, site, path, module))
    return problems


def _in_layer(layout: Layout, site: Site, path: str) -> str:
    """``path`` relative to the site's decoder layer (``self_attn.kk``), else the full path."""
    prefix = f"{layout.layer_path(site.layer)}." if site.layer is not None else None
    return path[len(prefix):] if prefix and path.startswith(prefix) else path


def _layer_list(layers: Sequence[int]) -> str:
    """``layer 3`` / ``layers 0-4`` / ``layers 0, 2, 5-7``."""
    ordered = sorted(set(layers))
    runs: list[list[int]] = []
    for index in ordered:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    text = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    return f"layer{'s' if len(ordered) > 1 else ''} {text}"


def check_sites(model: nn.Module, layout: Layout, sites: Sequence[Site], adapter: Adapter) -> None:
    """Raise one :class:`PlacementError` listing every :func:`site_problems`."""
    problems = site_problems(model, layout, sites, adapter)
    if problems:
        raise PlacementError("\n  ".join(["cannot place the adapter:", *problems]))


def _missing_module_message(
    model: nn.Module, layout: Layout, site: Site, path: str, module: nn.Module | None
) -> str:
    what = "is not a Linear layer" if module is not None else "does not exist"
    names: list[str] = []
    if site.layer is not None:
        try:
            names = _linear_names(model.get_submodule(layout.layer_path(site.layer)))
        except AttributeError:
            names = []
    roles = ", ".join(f"{r} ({layout.layer.projections[r]})" for r in layout.layer.roles)
    msg = f"module '{_in_layer(layout, site, path)}' {what}{_LAYERS}. Roles of this backbone: {roles}"
    if names:
        msg += f". Linear modules of a layer: {', '.join(names)}"
    return msg


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
    except BaseException:
        # leave the model as it was: take out what was inserted, restore the grad flags
        detach = getattr(adapter, "detach", None)
        if detach is not None:
            with contextlib.suppress(Exception):  # the attach error is the one to report
                detach()
        for param, flag in flags:
            param.requires_grad_(flag)
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
        See :mod:`lladapt.adapter_files`."""
        from lladapt.adapter_files import save_adapter

        return save_adapter(self, directory, overwrite=overwrite)

    def load_adapter(self, directory: str | Path) -> None:
        """Copy the tensors saved in ``directory`` into this adapter (same adapter and sites)."""
        from lladapt.adapter_files import load_adapter_state

        load_adapter_state(self, directory)

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, layout: Layout, directory: str | Path
    ) -> AdaptedModel:
        """Attach the adapter saved in ``directory`` to a fresh base model and load its tensors."""
        from lladapt.adapter_files import load_adapter

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
