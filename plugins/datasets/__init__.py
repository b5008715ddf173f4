"""Built-in plugin: datasets. The hook imports the implementation modules only when called.

* ``paper``: the reasoning datasets of LLM-Adapters and its training mixes;
* ``synthetic``: ``arith``, generated in code (no files);
* ``jsonfile``: ``json``, a user's own file with a field mapping.
"""

from lladapt import hookimpl


@hookimpl
def register_datasets(register):
    from lladapt.plugins.datasets import jsonfile, paper, synthetic

    for cls in paper.DATASETS:
        register(cls)
    register(synthetic.Arith)
    register(jsonfile.JsonFile)
