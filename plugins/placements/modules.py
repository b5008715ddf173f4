"""The ``modules`` placement: an explicit list of target Linear layers, by role or by name."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from lladapt import Adapter, ComponentConfig, Layout, PlacementError, Site
from lladapt.components.interfaces import ROLES
from lladapt.plugins.placements.layers import LayerPlacement, LayersConfig

__all__ = ["ModuleTarget", "ModulesPlacement"]


class ModuleTarget(ComponentConfig):
    """One target: a role (``q``, ``v``, ``up``, ``down``...) or a module name/path relative to
    the decoder layer (``query_key_value``, ``fc_in``, ``mlp.down_proj``), and optionally the mode
    (default: the adapter's default mode for that role)."""

    name: str = Field(min_length=1)
    mode: Literal["input", "output", "parallel"] | None = None


class ModulesConfig(LayersConfig):
    #: the target modules; a plain string is ``{name: ...}``.
    modules: list[ModuleTarget] = Field(min_length=1)

    @field_validator("modules", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


def resolve_target(layout: Layout, name: str) -> tuple[str, str | None]:
    """(module path relative to the layer, role or None) of a target name."""
    spec = layout.layer
    if name in ROLES:
        try:
            rel = spec.resolve_role(name)
        except KeyError:
            raise PlacementError(
                f"placement.modules: the backbone has no '{name}' projection; its roles: "
                + ", ".join(f"{r} ({spec.projections[r]})" for r in spec.roles)
            ) from None
        return rel, next(r for r in spec.roles if spec.projections[r] == rel)
    matches = [
        (role, rel) for role, rel in spec.projections.items()
        if rel == name or rel.endswith("." + name)
    ]
    if len(matches) > 1:
        raise PlacementError(
            f"placement.modules: '{name}' matches several projections "
            f"({', '.join(rel for _, rel in matches)}); give the path relative to the layer"
        )
    if matches:
        role, rel = matches[0]
        return rel, role
    return name, None  # a module the layout does not list: attach checks it exists


class ModulesPlacement(LayerPlacement):
    """Explicit target modules by role or name, each with an optional mode, in selected layers."""

    name: ClassVar[str] = "modules"
    Config = ModulesConfig
    config: ModulesConfig

    def resolve(self, layout: Layout, adapter: Adapter) -> list[Site]:
        """Every target's module and mode in every selected layer; one PlacementError lists every
        problem (unknown roles, modes the adapter lacks, conflicting modes, layers out of range)."""
        self.check_module_adapter(adapter)
        problems: list[str] = []
        chosen: dict[str, tuple[str, str | None, str, str]] = {}
        for target in self.config.modules:
            try:
                rel, role = resolve_target(layout, target.name)
            except PlacementError as exc:
                problems.append(str(exc))
                continue
            mode = target.mode or adapter.default_mode(role)
            if mode not in adapter.modes:
                problems.append(
                    f"placement.modules: adapter '{adapter.name}' has no mode '{mode}' (target "
                    f"'{target.name}'); its modes: {', '.join(sorted(adapter.modes))}"
                )
                continue
            seen = chosen.setdefault(rel, (rel, role, mode, target.name))
            if seen[2] != mode:
                problems.append(
                    f"placement.modules: '{rel}' is targeted twice with different modes "
                    f"('{seen[3]}': {seen[2]}, '{target.name}': {mode}); one adapter per module"
                )
        try:
            layers = self.layer_indices(layout)
        except PlacementError as exc:
            problems.append(str(exc))
        if problems:
            raise PlacementError("\n  ".join(problems))
        return [
            Site(path=f"{layout.layer_path(i)}.{rel}", layer=i, role=role, mode=mode)  # type: ignore[arg-type]
            for i in layers
            for rel, role, mode, _ in chosen.values()
        ]
