"""Built-in plugin: prompt templates. The hook imports the implementation modules only when
called: ``alpaca`` (default) and ``llm-adapters-compat``."""

from lladapt import hookimpl


@hookimpl
def register_prompt_templates(register):
    from lladapt.plugins.prompts import alpaca

    register(alpaca.Alpaca)
    register(alpaca.LLMAdaptersCompat)
