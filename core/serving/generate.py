"""``lladapt generate``: one instruction through a run's model, adapter and prompt template, with
the evaluator's generation code, so that a greedy answer is the one ``lladapt eval`` gives for
the same item (same prompt, decoding settings from the config's ``eval`` section, LoRA merged as
the evaluator merges it, same response extraction). Sampling and streaming go through
transformers' ``generate`` (and its ``TextStreamer``) with the same generation config."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lladapt.common.errors import LladaptError
from lladapt.evaluation.continuous import Sampling

__all__ = ["GenerateSettings", "generate_response"]

#: new tokens when neither the command line nor ``eval.max_new_tokens`` says (the paper's UI).
DEFAULT_MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class GenerateSettings:
    """What the command line may set; None: the run config's ``eval`` section decides."""

    max_new_tokens: int | None = None
    num_beams: int | None = None
    sampling: Sampling = Sampling()
    stream: bool = False


def generate_response(target: str | Path, instruction: str, *, input: str = "",
                      adapter: str | Path | None = None, settings: GenerateSettings = GenerateSettings(),
                      overrides: Iterable[str] = ()) -> str:
    """The response to ``instruction`` (and ``input``) of the run folder or config ``target``
    (with ``adapter``: that adapter folder instead of the run's). With ``settings.stream`` the
    continuation is printed to stdout as it is generated."""
    from lladapt.api.build import as_config, build
    from lladapt.components.interfaces import Example
    from lladapt.data.loading import get_template
    from lladapt.evaluation.runner import prepared
    from lladapt.evaluation.suite import evaluation_for
    from lladapt.serving.spec import read_target

    config, adapter_dir = read_target(target, adapter)
    config = as_config(config, overrides)
    if config.adapter is not None and adapter_dir is None and not config.eval.untrained_adapter:
        raise LladaptError(
            f"adapter '{config.adapter.name}' has no trained weights here: give a run folder, "
            "--adapter DIR, or a config whose adapter.path names a trained adapter")
    if settings.stream and (settings.num_beams or 1) > 1:
        raise LladaptError("--stream cannot show beam search as it goes: use --num-beams 1")
    decoding = evaluation_for(config, DEFAULT_MAX_NEW_TOKENS).decoding
    decoding = dataclasses.replace(decoding, max_new_tokens=settings.max_new_tokens or decoding.max_new_tokens,
                                   num_beams=settings.num_beams or decoding.num_beams, batch_size=1)
    built = build(config, adapter_dir)
    template = get_template(config.data.template)
    prompt = template.eval_prompt(Example(instruction=instruction, input=input))
    merge = config.eval.merge_adapter and config.eval.protocol == "fast"
    with prepared(built.model, merge=merge):
        text = _generate(built.model, built.loaded.tokenizer, prompt, decoding, settings)
    return template.extract_response(prompt + text)


def _generate(model: Any, tokenizer: Any, prompt: str, decoding: Any, settings: GenerateSettings) -> str:
    import torch
    from transformers import TextStreamer

    from lladapt.evaluation.generation import (
        encode_left_padded,
        finish,
        generate_batch,
        generation_config,
        model_device,
        stop_token_ids,
    )

    if settings.sampling.greedy and not settings.stream:
        return generate_batch(model, tokenizer, [prompt], decoding)[0].text
    config = settings.sampling.configure(generation_config(model, tokenizer, decoding))
    enc = encode_left_padded(tokenizer, [prompt], model_device(model))
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if settings.stream else None
    extra = {"tokenizer": tokenizer} if decoding.stop else {}
    if settings.sampling.seed is not None:
        torch.manual_seed(settings.sampling.seed)
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=config, streamer=streamer, **extra)
    row = out[0, enc["input_ids"].shape[1]:].tolist()
    return finish(tokenizer, row, stop_token_ids(model, tokenizer), decoding.stop).text
