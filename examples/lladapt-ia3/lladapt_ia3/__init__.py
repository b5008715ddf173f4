"""lladapt-ia3: the hooks lladapt calls. This module is imported by every `lladapt` command
(`--help` included), so it stays light: the components (and torch) are imported inside the hooks,
which lladapt calls only when it needs that kind of component."""

import lladapt


@lladapt.hookimpl
def register_adapters(register):
    from lladapt_ia3.adapter import IA3Adapter

    register(IA3Adapter)


@lladapt.hookimpl
def register_datasets(register):
    from lladapt_ia3.data import Antonyms

    register(Antonyms)


@lladapt.hookimpl
def register_answer_parsers(register):
    from lladapt_ia3.data import WordParser

    register(WordParser)
