"""Built-in plugin: backbones. The hook imports the implementation modules only when called."""

from lladapt import hookimpl


@hookimpl
def register_backbones(register):
    pass  # filled in by the modules of this package
