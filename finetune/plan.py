"""A run resolved once: the composed config becomes a validated `Run`, its `Method` and its
`TaskKind`, checked together (what a family refuses, what a method or task kind refuses, known
upstream breaks, whether the run can be split across processes). Everything above this layer
takes the `Plan`; nothing looks a method or a task kind up by name again.

Also the Hydra side of the config: where conf/ is, the schemas in Hydra's ConfigStore and the
resolvers conf/ uses.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from finetune.compat import known_break
from finetune.errors import UserError, require
from finetune.hardware import check_device, process_count
from finetune.methods import METHODS, QUANTIZABLE_METHODS, Method, build_method
from finetune.quantization import check_quantization
from finetune.schema import DatasetSpec, GenerationSpec, HardwareSpec, ModelSpec, Run, TrainSpec, config_hash
from finetune.sweep_names import job_number, outputs_dir, swept_label
from finetune.tasks import TaskKind, task_kind


@dataclass(frozen=True)
class Plan:
    """One run, resolved: its settings, the method that runs them and the kind of task it is."""

    run: Run
    method: Method
    kind: TaskKind

    @property
    def generates_text(self) -> bool:
        """Whether evaluation generates text, so that `generation.*` changes the results."""
        return self.kind.generates(self.run)

    @property
    def config_hash(self) -> str:
        """Identity of what the run computes (finetune.schema.config_hash)."""
        return config_hash(self.run, self.generates_text)


def plan(run: Run) -> Plan:
    """Resolve and check `run` as a whole; a combination that cannot run is a UserError naming why."""
    kind, method = task_kind(run.dataset.task), build_method(run.method)
    name, family = run.method.name, run.model
    refusals = {**family.refused, **family.unsupported}
    reason = refusals.get(name) or refusals.get(run.method.kind)
    require(reason is None, "method", f"{name} does not apply to model={family.name}: {reason}")
    if kind.generates(run):
        unsupported = {**family.refused_for_generation, **family.unsupported_for_generation}
        reason = unsupported.get(name) or unsupported.get(run.method.kind)
        require(reason is None, "method", f"{name} does not apply to model={family.name} "
                                          f"for dataset.task={run.dataset.task}: {reason}")
    else:
        reason = family.refused_for_heads.get(name) or family.refused_for_heads.get(run.method.kind)
        require(reason is None, "method", f"{name} does not apply to model={family.name}'s classification head: {reason}")
    reason = method.refusal(run, kind)
    require(reason is None, "method", str(reason))
    reason = kind.refusal(run)
    if reason is not None:
        raise UserError(reason)
    reason = known_break(run, kind.generates(run))
    require(reason is None, "method", str(reason))
    _check_processes(run, method, process_count())
    check_device(run.hardware)
    check_quantization(run.model, run.hardware, name, method.quantizable, QUANTIZABLE_METHODS)
    return Plan(run, method, kind)


def _check_processes(run: Run, method: Method, processes: int) -> None:
    """Under `accelerate launch` (several processes): the run must be one the processes can split."""
    if processes == 1:
        return
    if method.standalone:
        raise UserError(f"method={run.method.name}: runs outside the training loop, in one process; "
                        "start it without accelerate launch")
    if run.train.skip_nonfinite:
        raise UserError("train.skip_nonfinite: not supported with several processes (they would skip different batches)")
    for key, size in (("train.batch_size", run.train.batch_size), ("train.eval_batch_size", run.train.evaluation_batch_size)):
        if size % processes:
            raise UserError(f"{key}={size}: must be a multiple of the {processes} processes "
                            "(it is the global batch, split across them)")


def build_plan(config: DictConfig) -> Plan:
    """The composed config as a checked `Plan` (raises UserError on bad values)."""
    return plan(build_run(config))


def build_run(config: DictConfig) -> Run:
    """Turn a composed config into a `Run` whose every field is checked (raises UserError on bad values)."""
    run = OmegaConf.to_object(config)
    if not isinstance(run, Run):
        raise UserError("the composed config is not a run; does conf/config.yaml list run_schema?")
    for key, value in _floats(run):
        require(math.isfinite(value), key, f"must be a finite number, got {value}")
    return run


def _floats(spec: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every float setting of a run, as (dotted key, value)."""
    for item in fields(spec):
        value = getattr(spec, item.name)
        if is_dataclass(value):
            yield from _floats(value, f"{prefix}{item.name}.")
        elif isinstance(value, float):
            yield f"{prefix}{item.name}", value


def plan_from_record(config: dict[str, Any]) -> Plan:
    """The plan of the run that a results.json's `config` was written from."""
    method = dict(config["method"])
    method.setdefault("kind", method["name"])  # runs from before methods had kinds were named by theirs
    if method["kind"] not in METHODS:
        raise UserError(f"results.json: method kind '{method['kind']}' is not one this finetune knows")
    run = Run(
        model=ModelSpec(**config["model"]), dataset=DatasetSpec(**config["dataset"]),
        method=METHODS[method["kind"]].spec_class(**method), hardware=HardwareSpec(**config["hardware"]),
        train=TrainSpec(**config["train"]), generation=GenerationSpec(**config.get("generation", {})),
        output_dir=config["output_dir"], overrides=config["overrides"],
    )
    return Plan(run, build_method(run.method), task_kind(run.dataset.task))


def _conf_dir() -> Path:
    """The Hydra config tree: package data `finetune/conf` once installed (a wheel, or an editable
    install that maps the repository's conf/ there), else conf/ beside the package in a source tree."""
    spec = importlib.util.find_spec("finetune.conf")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "conf"


CONF_DIR = _conf_dir()
BUNDLED_DIR = Path(__file__).parent / "bundled"


def compose_plan(overrides: list[str], output_dir: str | Path) -> Plan:
    """conf/ composed with `overrides` as `finetune OVERRIDES` would, writing to `output_dir`."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        config = compose(config_name="config", overrides=list(overrides))
    # set, not passed as an override: a run dir's name may hold what Hydra's override grammar parses
    # (a sweep job's `lr=0.01,seed=1`)
    config.output_dir, config.overrides = str(output_dir), []
    return build_plan(config)


def _writable(schema: type) -> DictConfig:
    # OmegaConf marks frozen dataclasses read-only, which would stop Hydra from merging YAML and
    # overrides into them; the dataclass stays frozen for the Run that to_object builds.
    node = OmegaConf.structured(schema)

    def unlock(config: DictConfig) -> None:
        OmegaConf.set_readonly(config, None)
        for key in config.keys():
            child = config._get_node(key)
            if isinstance(child, DictConfig):
                unlock(child)

    unlock(node)
    return node


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore and register the resolvers conf/ uses: `bundled`,
    `tiny_model`, and the run-dir names' `finetune_swept`, `finetune_outputs` and `finetune_job`."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="run_schema", node=_writable(Run))
    for kind, method in METHODS.items():
        store.store(group="schema/method", name=kind, node=_writable(method.spec_class))
    resolvers = {"bundled": lambda name: str(BUNDLED_DIR / name), "tiny_model": _tiny_model,
                 "finetune_swept": swept_label, "finetune_outputs": outputs_dir, "finetune_job": job_number}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def _tiny_model(family: str) -> str:
    """$FINETUNE_TINY_MODELS/<family>, for +smoke=tiny."""
    root = os.environ.get("FINETUNE_TINY_MODELS")
    if not root:
        raise UserError("+smoke=tiny runs tiny models from $FINETUNE_TINY_MODELS, which is not set; build them once with "
                        "`python -m finetune.tiny ~/.cache/finetune-tiny` and export FINETUNE_TINY_MODELS=~/.cache/finetune-tiny")
    return str(Path(root).expanduser() / family)
