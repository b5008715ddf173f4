"""``python -m lladapt.cli``: the same as the ``lladapt`` command."""

from lladapt.cli import main

main()
