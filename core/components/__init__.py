"""The five kinds of components and how they are found: the contracts a component implements
(:mod:`.interfaces`), the pluggy hookspecs a plugin implements (:mod:`.hookspecs`) and the plugin
manager that loads the built-ins and the entry-point group ``lladapt`` into one registry per kind
(:mod:`.plugin_manager`)."""
