"""Built-in plugin: answer_parsers. The hook imports the implementation modules only when called."""

from lladapt import hookimpl


@hookimpl
def register_answer_parsers(register):
    pass  # filled in by the modules of this package
