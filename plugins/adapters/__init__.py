"""Built-in plugin: adapters. The hook imports the implementation modules only when called, so
that ``lladapt --help`` never imports torch."""

from lladapt import hookimpl


@hookimpl
def register_adapters(register):
    # Module adapters (series, parallel, LoRA): they hook Linear layers of the base model.
    from lladapt.plugins.adapters.lora import LoraAdapter
    from lladapt.plugins.adapters.parallel import ParallelAdapter
    from lladapt.plugins.adapters.series import SeriesAdapter

    for cls in (SeriesAdapter, ParallelAdapter, LoraAdapter):
        register(cls)

    # --- prompt-learning adapters (prefix, prompt, ptuning): owned by the prompt-learning
    # --- helper, who may edit this block.
    from lladapt.plugins.adapters.prefix import Prefix
    from lladapt.plugins.adapters.prompt import PromptTuning
    from lladapt.plugins.adapters.ptuning import PTuning

    for cls in (Prefix, PromptTuning, PTuning):
        register(cls)
    # --- end of prompt-learning adapters


@hookimpl
def register_placements(register):
    # The prompt-learning adapters bring their own placements (whole layers, the embeddings):
    # owned by the prompt-learning helper.
    from lladapt.plugins.adapters.prompt_placements import AllLayersPlacement, EmbeddingsPlacement

    for cls in (AllLayersPlacement, EmbeddingsPlacement):
        register(cls)
