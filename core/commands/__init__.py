"""CLI commands beyond the core ones in :mod:`lladapt.cli`, one module per command; each module
has ``register(cli)``. Importing a module is cheap: work happens inside the command."""
