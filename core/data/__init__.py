"""Stage 3, the data: reading records and building datasets, splits, parsers and templates
(:mod:`.loading`, entry point :func:`.loading.load_run_data`), fetching and caching the paper's
files (:mod:`.sources`), tokenizing prompts for training (:mod:`.tokenization`) and the
train/eval overlap check (:mod:`.overlap`)."""

from lladapt.common.moved import moved_names

__getattr__ = moved_names(__name__, "lladapt.data.loading", [
    "FIELDS", "LoadedSet", "RunData", "build_dataset", "default_split", "format_example",
    "get_template", "load_examples", "load_run_data", "load_set", "make_parser", "normalize_text",
    "read_examples", "read_records", "to_examples",
])
