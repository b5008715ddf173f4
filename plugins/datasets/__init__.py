"""Built-in plugin: datasets. The hook imports the implementation modules only when called."""

from lladapt import hookimpl


@hookimpl
def register_datasets(register):
    pass  # filled in by the modules of this package
