"""lladapt's built-in plugins, written only against lladapt's public API, exactly as a third-party
plugin would be. Each subpackage is one plugin (see ``lladapt.components.plugin_manager.BUILTIN_PLUGINS``)."""
