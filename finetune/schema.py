"""Typed schema of a run: frozen dataclasses that Hydra composes into and validates against.

Every YAML under `conf/` merges into these classes, so a misspelled key or a wrong type fails at
composition. `OmegaConf.to_object` turns the composed config into a `Run`; each class checks its
own fields in `__post_init__`. Checks that span parts (a family that refuses a method, a task
kind's refusals) are the plan's (finetune.plan), which this module knows nothing of.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from finetune.errors import UserError, one_of, require
from finetune.logger_spec import LoggerSpec

ARCHITECTURES = ("encoder", "seq2seq", "causal", "vision_language")
DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUANTIZATIONS = ("4bit", "8bit")
# train.* keys outside config_hash: cadence, and gradient checkpointing (the same loss, less memory)
TRAIN_BOOKKEEPING = ("log_every_steps", "save_every_steps", "keep_checkpoints", "eval_every_steps", "gradient_checkpointing")
# keys added after runs existed: config_hash leaves them out at their defaults, so those runs' hashes stay valid
LATER_KEYS = (("train", "feature_cache"), ("dataset", "image_column"), ("dataset", "prompt_template"),
              ("dataset", "delimiter"), ("model", "quantization"),
              ("model", "chat_template"))
# where work may be skipped, what a checkpoint is, how a study searches
NOT_IN_HASH = (("model", "embeddings"), ("model", "model_type"), ("model", "roles"), ("model", "refused"),
               ("model", "refused_for_generation"), ("model", "refused_for_heads"),
               ("method", "search"))


@dataclass(frozen=True)
class ModelSpec:
    """A model family: where its weights are and the facts the methods need, as data."""

    name: str = MISSING
    hub_id: str = MISSING  # Hugging Face Hub id, used when neither path nor weights_package is set
    path: Optional[str] = None  # local checkpoint directory; wins over everything else
    weights_package: Optional[str] = None  # pip package shipping the weights (get_model_path())
    architecture: str = "encoder"  # encoder | seq2seq | causal | vision_language (CLIP: images and texts)
    model_type: Optional[str] = None  # config.json's model_type of this family's checkpoints; model.path is checked against it
    layers: str = MISSING  # dotted path of the ModuleList of transformer blocks (last_layers)
    lm_layers: Optional[str] = None  # the same in the language-model class (text generation); null: layers
    embeddings: Optional[str] = None  # the module feeding the first block; the frozen-feature cache skips it too
    shared_layers: bool = False  # one block reused across depth (ALBERT): last_layers trains it whole
    head: List[str] = field(default_factory=lambda: ["classifier"])  # trained by head_only
    lora_targets: List[str] = field(default_factory=lambda: ["query", "value"])
    ia3_targets: List[str] = field(default_factory=lambda: ["key", "value", "output.dense"])
    ia3_feedforward: List[str] = field(default_factory=lambda: ["output.dense"])  # subset of ia3_targets
    peft_trainable: List[str] = field(default_factory=lambda: ["classifier"])  # new head modules peft trains whole
    # module-name suffixes by role (attention, mlp, norms), which method.targets of kind peft name
    roles: Dict[str, List[str]] = field(default_factory=dict)
    prompt_config_keys: Dict[str, str] = field(default_factory=dict)  # peft prompt field -> model config key
    unsupported: Dict[str, str] = field(default_factory=dict)  # method -> why it cannot apply
    refused: Dict[str, str] = field(default_factory=dict)  # the same, added after runs existed (outside config_hash)
    unsupported_for_generation: Dict[str, str] = field(default_factory=dict)  # the same, where the task generates text
    refused_for_generation: Dict[str, str] = field(default_factory=dict)  # the same, added later (outside config_hash)
    # refused where a classification head model classifies (not text-to-text); added later, outside config_hash
    refused_for_heads: Dict[str, str] = field(default_factory=dict)
    text_to_text_methods: List[str] = field(default_factory=list)  # classify by generating label names
    pad_token: Optional[str] = None  # token reused as padding when the tokenizer has none
    padding_side: str = "right"
    max_length: int = 128  # tokens; longer texts are truncated and counted in the log
    trust_remote_code: bool = False
    chat_template: bool = False  # causal summarization: prompts in the tokenizer's chat template (instruct checkpoints)
    quantization: Optional[str] = None  # 4bit | 8bit: base weights through bitsandbytes (CUDA only; QLoRA)

    def __post_init__(self) -> None:
        one_of(self.architecture, ARCHITECTURES, "model.architecture")
        one_of(self.padding_side, ("left", "right"), "model.padding_side")
        if self.quantization is not None:
            one_of(self.quantization, QUANTIZATIONS, "model.quantization")
        object.__setattr__(self, "roles", {role: tuple(names) for role, names in self.roles.items()})
        require(self.max_length > 0, "model.max_length", f"must be > 0, got {self.max_length}")
        for key in ("head", "lora_targets", "ia3_targets", "ia3_feedforward", "peft_trainable", "text_to_text_methods"):
            object.__setattr__(self, key, tuple(getattr(self, key)))


@dataclass(frozen=True)
class DatasetSpec:
    """Where the data is and which columns hold the text and the label."""

    name: str = MISSING
    task: str = "classification"  # a kind in finetune/tasks/: classification, multilabel, summarization, image_classification
    path: Optional[str] = None  # directory of {train,validation,test}.{jsonl,json,csv,parquet}[.gz]
    encoding: str = "utf-8"  # text encoding of local .jsonl, .json and .csv files, e.g. latin-1
    delimiter: str = ","  # field separator of local .csv files, e.g. ";" or "\t"
    hub_id: Optional[str] = None  # used when path is not set
    hub_config: Optional[str] = None  # e.g. "sst2" for hub_id "glue"
    hub_renames: Dict[str, str] = field(default_factory=dict)  # Hub column -> our column name
    text_column: str = "text"  # the input text (summarization: the document)
    image_column: str = "image"  # image_classification: an image path (relative to dataset.path) or a Hub image
    prompt_template: str = "a photo of a {label}"  # image_classification: one text prompt per class
    label_column: str = "label"  # classification: one label; multilabel: a list (0/1 per label, or names)
    label_columns: Optional[List[str]] = None  # multilabel: one 0/1 column per label, used when present
    label_names: Optional[List[str]] = None  # names of the label ids 0..n-1 when labels are ints
    summary_column: str = "summary"  # summarization: the reference summary
    instruction: str = "Classify this text:"  # what the task is, in words: initialises soft prompts
    source_prefix: str = ""  # prepended to every input text, e.g. "summarize: " for T5
    summary_separator: str = "\nTL;DR:\n"  # causal models: between the document and its summary
    max_source_length: Optional[int] = None  # input tokens; null: model.max_length
    max_target_length: int = 128  # summary tokens kept for training and the references' loss
    threshold: float = 0.5  # multilabel: a label is predicted when its probability exceeds this
    tune_threshold: bool = False  # multilabel: pick the threshold with the best validation Jaccard
    train_split: str = "train"
    validation_split: Optional[str] = "validation"  # null: carve validation_fraction from train
    test_split: Optional[str] = "test"  # null: no test evaluation
    validation_fraction: float = 0.1
    max_train_samples: Optional[int] = None  # seeded random subset, for quick runs
    max_eval_samples: Optional[int] = None  # per evaluation split

    def __post_init__(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise UserError(f"dataset.encoding: unknown encoding '{self.encoding}'; e.g. utf-8, latin-1, cp1252") from None
        require(
            self.path is not None or self.hub_id is not None,
            "dataset.path",
            f"data set '{self.name}' needs dataset.path=DIR (or a dataset.hub_id)",
        )
        require(
            0.0 < self.validation_fraction < 1.0,
            "dataset.validation_fraction",
            f"must be strictly between 0 and 1, got {self.validation_fraction}",
        )
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            require(value is None or value > 0, f"dataset.{key}", f"must be > 0, got {value}")
        require(len(self.delimiter) == 1, "dataset.delimiter", f"must be one character, e.g. ';' or '\\t', got {self.delimiter!r}")
        require(0.0 < self.threshold < 1.0, "dataset.threshold", f"must be between 0 and 1, got {self.threshold}")
        require(self.max_target_length > 0, "dataset.max_target_length", f"must be > 0, got {self.max_target_length}")
        require(self.max_source_length is None or self.max_source_length > 0, "dataset.max_source_length",
                 f"must be > 0 or null, got {self.max_source_length}")
        for key in ("label_names", "label_columns"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, tuple(getattr(self, key)))


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation settings shared by every method that trains."""

    epochs: int = 1
    lr: float = 1e-4  # peak learning rate of AdamW; full fine-tuning's (the method study's best on MiniLM)
    batch_size: int = 32  # samples per forward pass
    eval_batch_size: Optional[int] = None  # default: 2 x batch_size (no activations kept)
    grad_accum: int = 1  # optimizer step every grad_accum batches
    max_steps: Optional[int] = None  # optimizer steps; caps epochs when set
    warmup_ratio: float = 0.06  # fraction of steps with linear warmup, then linear decay to 0
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    max_grad_norm: float = 1.0  # gradient clipping; 0 disables
    early_stopping_patience: Optional[int] = 2  # epochs without improvement; null disables
    seed: int = 42
    log_every_steps: int = 10  # loss/lr to TensorBoard and the progress bar
    eval_every_steps: Optional[int] = None  # also evaluate validation every N optimizer steps (a pruner sees each); null: epoch ends only
    save_every_steps: Optional[int] = None  # resumable checkpoint every N optimizer steps; always at epoch end
    keep_checkpoints: int = 2  # the newest K resumable checkpoints are kept
    skip_nonfinite: bool = False  # skip batches with a NaN/inf loss instead of stopping the run
    # frozen blocks' output computed once, in eval mode, and reused (head_only, last_layers, none;
    # $FINETUNE_CACHE, default ~/.cache/finetune); false: they run every step, with dropout in training
    feature_cache: bool = True
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower

    @property
    def evaluation_batch_size(self) -> int:
        """`eval_batch_size`, or twice the training batch (evaluation keeps no activations)."""
        return self.eval_batch_size or 2 * self.batch_size

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "grad_accum", "log_every_steps", "keep_checkpoints"):
            value = getattr(self, key)
            require(value > 0, f"train.{key}", f"must be > 0, got {value}")
        require(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        require(0 <= self.seed < 2**32, "train.seed", f"must be in [0, 2**32 - 1], got {self.seed}")
        for key in ("eval_batch_size", "max_steps", "early_stopping_patience", "save_every_steps", "eval_every_steps"):
            value = getattr(self, key)
            require(value is None or value > 0, f"train.{key}", f"must be > 0 or null, got {value}")
        require(0 <= self.warmup_ratio < 1, "train.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        require(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.max_grad_norm >= 0, "train.max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")


@dataclass(frozen=True)
class GenerationSpec:
    """How summaries are generated for evaluation (passed to `model.generate`)."""

    max_new_tokens: int = 128  # not transformers' 20-token default, which cuts summaries short
    num_beams: int = 1  # 1: greedy; 4 is the usual CNN/DailyMail setting, about 4x slower
    length_penalty: float = 1.0  # > 1 favours longer beams (beam search only)
    no_repeat_ngram_size: int = 3  # 0 disables; 3 stops the loops small models fall into

    def __post_init__(self) -> None:
        for key in ("max_new_tokens", "num_beams"):
            require(getattr(self, key) > 0, f"generation.{key}", f"must be > 0, got {getattr(self, key)}")
        require(self.no_repeat_ngram_size >= 0, "generation.no_repeat_ngram_size",
                 f"must be >= 0, got {self.no_repeat_ngram_size}")


@dataclass(frozen=True)
class HardwareSpec:
    """Where and at which precision the run executes."""

    name: str = MISSING
    device: str = "auto"  # auto: the GPU when one is visible, else the CPU
    precision: str = "auto"  # auto: bf16 on a GPU that supports it or a CPU with avx512_bf16/AMX, else fp32
    num_threads: Optional[int] = None  # CPU threads for torch; null keeps torch's default
    compile: bool = False  # torch.compile the training forward (dynamic shapes); pays off on GPUs
    jobs_per_gpu: int = 1  # parallel multirun jobs (hydra/launcher=joblib) that may share one GPU
    loader_workers: Optional[int] = None  # processes decoding images for the loader; null: up to 4 where a task decodes

    def __post_init__(self) -> None:
        one_of(self.device, DEVICES, "hardware.device")
        one_of(self.precision, PRECISIONS, "hardware.precision")
        require(self.jobs_per_gpu > 0, "hardware.jobs_per_gpu", f"must be > 0, got {self.jobs_per_gpu}")
        require(self.num_threads is None or self.num_threads > 0, "hardware.num_threads",
                f"must be > 0 or null (torch's default), got {self.num_threads}")
        require(self.loader_workers is None or self.loader_workers >= 0, "hardware.loader_workers",
                f"must be >= 0 or null, got {self.loader_workers}")


@dataclass(frozen=True)
class TrialSpec:
    """Set by the Optuna sweeper (hydra/sweeper=optuna) in each job it launches: the job's trial, to
    which it reports every validation and which may prune it. Not part of what the run computes."""

    storage: Optional[str] = None  # the study's Optuna storage URL, or its journal file
    study: Optional[str] = None
    number: Optional[int] = None
    pruning: bool = False  # the study has a pruner: report each validation and stop when pruned


@dataclass(frozen=True)
class MethodSpec:
    """A method's settings; each method's YAML extends one subclass (finetune/methods/).

    `name` is the YAML's own (a variant such as lora_alpha32 keeps it in results, run dirs and the
    report); `kind` names the class that runs it and is fixed by the subclass.
    """

    name: str = MISSING
    kind: str = MISSING
    # finetune-study's search space for this method: sweep overrides in Hydra's syntax, e.g.
    # "train.lr=tag(log, interval(1e-4, 3e-3))"; empty for a baseline, which runs once
    search: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class Run:
    """One fully specified, validated and immutable run: the only input of the engine."""

    model: ModelSpec = MISSING  # the groups fill these from conf/<group>/<option>.yaml
    dataset: DatasetSpec = MISSING
    method: Any = MISSING  # one of the MethodSpec subclasses, chosen by the method group
    hardware: HardwareSpec = MISSING
    train: TrainSpec = field(default_factory=TrainSpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    trial: TrialSpec = field(default_factory=TrialSpec)  # the Optuna sweeper's; null outside a search
    logger: LoggerSpec = field(default_factory=LoggerSpec)  # the logger group: TensorBoard, CSV, MLflow, W&B
    output_dir: str = "${hydra:runtime.output_dir}"  # the Hydra run directory
    restart: bool = False  # start over in a used run dir, deleting the earlier run's results, checkpoints and model
    overrides: List[str] = field(default_factory=lambda: "${hydra:overrides.task}")  # type: ignore

    def __post_init__(self) -> None:
        require(isinstance(self.method, MethodSpec), "method", "must be chosen with method=NAME")
        object.__setattr__(self, "overrides", tuple(self.overrides))

    def uses_text_to_text(self) -> bool:
        """Whether the family classifies by generating label names with this method (its YAML lists them)."""
        return bool({self.method.name, self.method.kind} & set(self.model.text_to_text_methods))


def config_hash(run: Run, generates_text: bool) -> str:
    """Identity of what the run computes: model, data, method, the training settings that change
    results, and the generation settings where the run generates text (`generates_text`).

    Hardware, the output location and bookkeeping (checkpoint and logging cadence) are left out, so
    a run may resume on another machine or with other checkpoint settings.
    """
    identity: dict[str, Any] = {key: asdict(getattr(run, key)) for key in ("model", "dataset", "method")}
    del identity["method"]["kind"]  # method_kind says it (and the hashes of earlier runs stay valid)
    for section, key in NOT_IN_HASH:  # facts about the family, not what is computed
        if not (key == "roles" and run.method.kind == "peft"):  # except the roles a peft type adapts
            del identity[section][key]
    identity["method_kind"] = type(run.method).__name__
    identity["train"] = {key: value for key, value in asdict(run.train).items() if key not in TRAIN_BOOKKEEPING}
    for section, key in LATER_KEYS:
        if getattr(getattr(run, section), key) == _default(type(getattr(run, section)), key):
            del identity[section][key]
    if generates_text:
        identity["generation"] = asdict(run.generation)
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _default(schema: type, key: str) -> Any:
    return next(spec.default for spec in fields(schema) if spec.name == key)
