"""The run configuration's pydantic models, one per section (``model``, ``adapter``,
``placement``, ``data``, ``train``, ``eval``) and :class:`RunConfig` that holds them. A
component section (``adapter``, ``placement``, a dataset) keeps its name and raw fields here; the
component's own ``Config`` validates them in :func:`lladapt.config.loading.resolve_components`."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    field_validator,
    model_validator,
)

from lladapt.components.interfaces import ComponentConfig
from lladapt.config.trackers import check_available


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)


class QuantizationConfig(Section):
    """Load the base model's Linear layers quantized with bitsandbytes (QLoRA-style)."""

    bits: Literal[4, 8]
    #: 4-bit data type.
    quant_type: Literal["nf4", "fp4"] = "nf4"
    #: quantize the 4-bit quantization constants too.
    double_quant: bool = True
    #: dtype of the 4-bit matmuls (default: the model dtype, float32 on the CPU).
    compute_dtype: Literal["float32", "float16", "bfloat16"] | None = None


class ModelSection(Section):
    """The base model. A plain string is shorthand for ``{source: ...}``."""

    #: a hub id (``huggyllama/llama-7b``), a local folder, a ``.gguf`` file, or a preset name
    #: (``llama-7b``: the architecture on the meta device, no weights, for ``lladapt params``).
    source: str
    #: backbone name; by default picked from the model's ``model_type``.
    backbone: str | None = None
    revision: str | None = None
    #: tokenizer source when it differs from ``source``.
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantization: QuantizationConfig | None = None
    #: run code shipped with a hub model. Off unless you turn it on.
    trust_remote_code: bool = False
    #: accelerate device map (``auto`` spreads a large model over the GPUs); None: one device.
    device_map: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value


class ComponentSection(BaseModel):
    """``name`` plus the named component's own fields (validated against its ``Config``)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    _options: ComponentConfig | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    #: keys of this section that belong to lladapt, not to the component's Config.
    _own_keys: typing.ClassVar[frozenset[str]] = frozenset({"name"})

    def component_fields(self) -> dict[str, Any]:
        return {k: v for k, v in (self.model_extra or {}).items() if k not in self._own_keys}

    @property
    def options(self) -> ComponentConfig:
        """The component's validated ``Config`` (set by :func:`resolve_components`)."""
        if self._options is None:
            raise RuntimeError(f"component '{self.name}' was not resolved; use load_config()")
        return self._options


class DatasetRef(ComponentSection):
    """A dataset by name, with the split to read, an optional limit, and its own fields."""

    split: str | None = None
    #: use only the first N records.
    limit: PositiveInt | None = None


class DataSection(Section):
    """Training data and how it becomes token ids."""

    #: datasets to train on (a name, or a list of names / ``{name, split, limit, ...}``).
    train: list[DatasetRef] = Field(default_factory=list)
    #: prompt template name.
    template: str = "alpaca"
    #: maximum tokens per training example (the paper: 256).
    cutoff_len: PositiveInt = 256
    #: put the prompt in the loss too (the paper's default); False trains on the response only.
    train_on_inputs: bool = True
    add_eos: bool = True
    #: records held out of training for validation loss.
    val_set_size: int = Field(default=0, ge=0)
    #: a local copy of the paper's data folders (else ``LLADAPT_DATA_DIR``, else download).
    data_dir: Path | None = None
    #: what to do when training data overlaps evaluation data.
    overlap: Literal["warn", "error", "ignore"] = "warn"

    @field_validator("train", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value


class TrainSection(Section):
    """The training recipe (defaults: the paper's)."""

    epochs: PositiveFloat = 3.0
    #: stop after this many optimizer steps (overrides ``epochs``).
    max_steps: PositiveInt | None = None
    #: default: the adapter's own (3e-4; prefix tuning 3e-2).
    learning_rate: PositiveFloat | None = None
    batch_size: PositiveInt = 16
    micro_batch_size: PositiveInt = 4
    warmup_steps: int = Field(default=100, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: PositiveFloat | None = 1.0
    #: ``constant`` keeps the rate fixed from step 1; ``constant_with_warmup`` ramps up first.
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    #: ``auto``: fp16 on a GPU (bf16 where supported); on the CPU bf16 where it is native (AVX-512 BF16 or AMX), else fp32.
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    #: ``torch.compile`` the model (one warm-up pass compiles it before the clock starts; its
    #: seconds are reported apart). ``auto``: on a CUDA GPU only (on the CPU compiling took longer
    #: than it saved on the benchmark workload; docs/benchmarks.md).
    compile: Literal["auto"] | bool = "auto"
    #: on the CPU (Linux, glibc): keep the memory the steps free for their next allocations
    #: instead of handing it back to the system at each free, whose fresh pages then cost a page
    #: fault each (30,000-150,000 a step on the benchmark workload); handed back at the end.
    keep_freed_memory: bool = True
    #: several processes: ``ddp`` (each holds the whole base model), ``fsdp`` (the frozen base is
    #: sharded, FSDP2), ``auto``: as ``accelerate launch`` says (``--use_fsdp``), else ``ddp``.
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"
    seed: int = 42
    logging_steps: PositiveInt = 10
    #: save a checkpoint every N steps (0: only at the end).
    save_steps: int = Field(default=200, ge=0)
    #: keep only the newest N checkpoints (0: keep all).
    save_total_limit: int = Field(default=2, ge=0)
    #: validation loss every N steps when ``data.val_set_size`` > 0 (0: only at the end).
    eval_steps: int = Field(default=200, ge=0)
    #: with a validation set: the final adapter is the one with the lowest validation loss.
    keep_best: bool = False
    #: group examples of similar length into micro-batches (less padding; order stays random).
    group_by_length: bool = True
    #: pad each micro-batch to a multiple of this (8 suits GPU tensor cores; null: no rounding).
    pad_to_multiple_of: PositiveInt | None = None
    #: ``tokens``: loss averaged over the label tokens of the whole accumulated batch (equals one
    #: big batch); ``micro_batch``: the mean of each micro-batch's mean (the paper's code).
    loss_normalization: Literal["tokens", "micro_batch"] = "tokens"
    #: ``auto``: a progress bar on a terminal, plain lines otherwise; ``bar``; ``plain``; ``none``.
    progress: Literal["auto", "bar", "plain", "none"] = "auto"
    #: experiment trackers to log to through accelerate (``tensorboard``, ``wandb``, ``mlflow``, ...).
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab",
                            "trackio"]] = Field(default_factory=list)

    @field_validator("report_to")
    @classmethod
    def _trackers_installed(cls, names: list[str]) -> list[str]:
        return check_available(names)

    @model_validator(mode="after")
    def _batches_divide(self) -> TrainSection:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        return self


class EvalSection(Section):
    """Evaluation: generate, parse, score."""

    datasets: list[DatasetRef] = Field(default_factory=list)
    split: str = "test"
    #: default: each dataset's own (math 256, commonsense 32).
    max_new_tokens: PositiveInt | None = None
    num_beams: PositiveInt = 1
    batch_size: PositiveInt = 8
    #: answer parser for every dataset (default: each dataset's own).
    parser: str | None = None
    limit: PositiveInt | None = None
    #: also evaluate the untrained model first (results.json ``eval_before``): before and after.
    before_training: bool = False
    #: ``fast``: length-sorted batches, KV cache, adapter merged where it can be; ``paper``: the
    #: paper code's protocol (one item at a time, beam search 4, no cache; ignores batch_size and
    #: num_beams). See docs/evaluation.md.
    protocol: Literal["fast", "paper"] = "fast"
    #: strings that end a response (e.g. ``"### Instruction:"``); off by default (the paper's).
    stop: list[str] = Field(default_factory=list)
    #: ``generate`` and parse, or ``loglik``: pick the most likely answer choice (multiple-choice
    #: datasets only).
    scoring: Literal["generate", "loglik"] = "generate"
    #: ``loglik``: compare choices by log-likelihood per continuation token.
    length_normalize: bool = False
    #: fold the adapter into the weights while evaluating, where it can be (LoRA).
    merge_adapter: bool = True
    #: on a CPU, run the float32 linear layers on oneDNN's prepacked weights while evaluating
    #: (faster short products; the same answers); ``false``: PyTorch's default kernels.
    pack_weights: bool = True
    #: evaluate a configured adapter that was neither trained in this run nor loaded from
    #: ``adapter.path`` / ``--adapter`` (its initial weights).
    untrained_adapter: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("datasets", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value


class AdapterSection(ComponentSection):
    """The adapter: ``name`` plus its fields, and optionally ``path``, a saved adapter folder
    (lladapt's or PEFT's) to load instead of initialising one."""

    path: Path | None = None
    _own_keys: typing.ClassVar[frozenset[str]] = frozenset({"name", "path"})


class RunConfig(Section):
    """A whole run: ``lladapt run CONFIG``. Only ``model`` is required."""

    model: ModelSection
    adapter: AdapterSection | None = None
    #: default: the adapter's own default placement.
    placement: ComponentSection | None = None
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    output_dir: Path = Path("runs/latest")


# --------------------------------------------------------------------------- errors
