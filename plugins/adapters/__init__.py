"""Built-in plugin: adapters. The hook imports the implementation modules only when called."""

from lladapt import hookimpl


@hookimpl
def register_adapters(register):
    pass  # filled in by the modules of this package
