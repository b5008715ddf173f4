"""The run configuration: pydantic models, loading from YAML/JSON, ``--set`` overrides, and the
validation of each named component's fields against that component's own ``Config``.

Every problem is collected in one pass and raised as one :class:`ConfigError`, each under its
dotted path, with "did you mean" for misspelled keys and names.
"""

from lladapt.config.loading import (
    apply_overrides,
    component_options,
    errors_from_validation,
    load_config,
    read_config_file,
    resolve_components,
)
from lladapt.config.sections import (
    AdapterSection,
    ComponentSection,
    DataSection,
    DatasetRef,
    EvalSection,
    ModelSection,
    QuantizationConfig,
    RunConfig,
    Section,
    TrainSection,
)

__all__ = [
    "AdapterSection",
    "ComponentSection",
    "DataSection",
    "DatasetRef",
    "EvalSection",
    "ModelSection",
    "QuantizationConfig",
    "RunConfig",
    "Section",
    "TrainSection",
    "apply_overrides",
    "component_options",
    "errors_from_validation",
    "load_config",
    "read_config_file",
    "resolve_components",
]
