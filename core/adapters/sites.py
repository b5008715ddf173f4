"""Sites on a model: the Site of a module path, and the check that every site of a placement names
a Linear-like module and a mode the adapter has (one message per problem, its layers grouped)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lladapt.common.errors import PlacementError
from lladapt.components.interfaces import Adapter, Layout, Site

__all__ = ["check_sites", "site_for_path", "site_problems"]


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
