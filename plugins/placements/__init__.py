"""Built-in plugin: placements. The hook imports the implementation modules only when called, so
that ``lladapt --help`` never imports them."""

from lladapt import hookimpl


@hookimpl
def register_placements(register):
    from lladapt.plugins.placements.blocks import (
        AttentionPlacement,
        BothPlacement,
        MlpPlacement,
    )
    from lladapt.plugins.placements.modules import ModulesPlacement

    for cls in (AttentionPlacement, MlpPlacement, BothPlacement, ModulesPlacement):
        register(cls)
    # The prompt-learning adapters' placements (all_layers, embeddings) are registered by
    # lladapt.plugins.adapters, beside those adapters.
