"""Built-in plugin: answer parsers. The hook imports the implementation modules only when called.

* ``paper``: ``number``, ``letter``, ``choice``: the paper code's rules (the defaults);
* ``improved``: ``number-answer``, ``letter-answer``, ``choice-answer``: read "the answer is ..."
  first.
"""

from lladapt import hookimpl


@hookimpl
def register_answer_parsers(register):
    from lladapt.plugins.answer_parsers import improved, paper

    for cls in (paper.NumberParser, paper.LetterParser, paper.ChoiceParser):
        register(cls)
    for cls in (improved.AnswerNumberParser, improved.AnswerLetterParser, improved.AnswerChoiceParser):
        register(cls)
