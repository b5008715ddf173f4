"""A plugin that fails to import (tests check it is reported by name, not as a traceback)."""

raise ImportError("lladapt_broken needs a library that is not installed")
