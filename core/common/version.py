"""lladapt's version (one place: the package, adapter files and plugin checks read it here)."""

__version__ = "0.1.0"
