"""Built-in plugin: prompts. The hook imports the implementation modules only when called."""

from lladapt import hookimpl


@hookimpl
def register_prompt_templates(register):
    pass  # filled in by the modules of this package
