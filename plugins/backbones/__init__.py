"""Built-in plugin: the backbones of the paper (LLaMA, BLOOM, OPT, GPT-J).

Written only against lladapt's public API, exactly as a third-party backbone plugin would be. The
hook imports the family modules (and, through them, nothing heavier than lladapt's interfaces)
only when called, so that ``lladapt --help`` stays fast.
"""

from lladapt import hookimpl


@hookimpl
def register_backbones(register):
    from lladapt.plugins.backbones.bloom import BloomBackbone
    from lladapt.plugins.backbones.gptj import GPTJBackbone
    from lladapt.plugins.backbones.llama import LlamaBackbone
    from lladapt.plugins.backbones.opt import OPTBackbone

    for cls in (LlamaBackbone, BloomBackbone, GPTJBackbone, OPTBackbone):
        register(cls)
