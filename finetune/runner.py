"""The recipe every run follows, top to bottom: load the data, build the model, encode, train,
evaluate, save. `execute` wraps it with what every run keeps: results.json, TensorBoard, peak
memory, checkpoints to resume from, and a clean stop on signals."""

from __future__ import annotations

import errno
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from finetune.artifacts import ResultsFile, save_model
from finetune.batching import LengthGroupedBatches, make_loader, sorted_batches
from finetune.checkpoint import BestCheckpoint, Checkpoints
from finetune.data import load_splits
from finetune.engine import Trainer, planned_steps
from finetune.errors import Interrupted, RunError, TrialPruned, UserError
from finetune.evaluation import evaluate
from finetune.files import write_text_atomic
from finetune.frozen import FrozenFeatures, frozen_features
from finetune.guards import StopSignals, stop_on_signals
from finetune.hardware import PeakMemory, agree_on_processes, compiled, loader_workers, make_accelerator, run_precision
from finetune.models import count_parameters, enable_gradient_checkpointing, load_model, load_tokenizer, model_source
from finetune.plan import Plan
from finetune.provenance import weights_provenance
from finetune.trackers import LOGGED, Trackers, open_trackers
from finetune.record import Outcome, RunRecord
from finetune.tasks import Task
from finetune.tasks.columns import LabelledSplits
from finetune.tasks.encoding import Tokenized, tokenize
from finetune.trial import pruner_of

log = logging.getLogger(__name__)

SAMPLES_IN_TENSORBOARD = 5
# a full disk, a quota, a read-only or forbidden folder: the run ends with one line, not a traceback
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass(frozen=True)
class Session:
    """What one execution of a run holds for its stages."""

    plan: Plan
    accelerator: Accelerator
    tracker: Trackers
    memory: PeakMemory
    checkpoints: Checkpoints
    resume_from: Path | None
    stop: StopSignals

    @property
    def run_dir(self) -> Path:
        return Path(self.plan.run.output_dir)


def execute(plan: Plan) -> RunRecord:
    """Run one experiment, resuming from the newest checkpoint in its run dir if there is one.

    results.json says `completed` only if every step finished, `interrupted` after SIGTERM or SIGINT
    (what was finished is kept) and `failed` with the error otherwise.
    """
    accelerator = make_accelerator(plan.run.hardware, plan.run.train.grad_accum)
    plan = replace(plan, run=agree_on_processes(plan.run, accelerator))
    run = plan.run
    main = accelerator.is_main_process  # only the main process writes files
    checkpoints = Checkpoints(Path(run.output_dir) / "checkpoints", run.train.keep_checkpoints)
    resume_from = checkpoints.latest()
    results = ResultsFile(plan, write=main)
    memory, tracker, completed = PeakMemory(), Trackers([]), False
    try:
        with stop_on_signals() as stop:
            # resumed: each tracker continues its run, dropping what the run that died logged after the checkpoint
            tracker = open_trackers(run, _resumed_step(checkpoints, resume_from, Path(run.output_dir)),
                                    results.record["provenance"], write=main)
            session = Session(plan, accelerator, tracker, memory, checkpoints, resume_from, stop)
            outcome = _standalone(session) if plan.method.standalone else _recipe(session)
            with stop.in_loop():  # a signal now waits: the record, then the trackers, are written whole
                record = RunRecord.from_dict(results.complete(outcome))
                completed = True
                tracker.finish("completed", outcome)
            return record
    except TrialPruned as pruned:
        log.info("Trial %s pruned at step %d", plan.run.trial.number, pruned.training["optimizer_steps"])
        record = RunRecord.from_dict(results.prune(pruned.training, pruned.validation))
        tracker.finish("pruned")
        return record
    except Interrupted as error:
        if completed:  # a second signal while the trackers finished: the run itself is done and recorded
            raise
        results.interrupt(error)
        tracker.finish("interrupted")
        raise
    except OSError as error:
        results.fail(error)
        tracker.finish("failed")
        if error.errno not in WRITE_ERRORS:
            raise
        raise RunError(f"cannot write {error.filename or 'a file'} ({error.strerror}); free space or fix the "
                       "permissions, then run the same command again: it resumes from the last checkpoint") from error
    except BaseException as error:
        if not completed:
            results.fail(error)
            tracker.finish("failed")
        raise
    finally:
        memory.stop()
        tracker.close()


def _resumed_step(checkpoints: Checkpoints, resume_from: Path | None, run_dir: Path) -> int | None:
    """The step the trackers continue after: the checkpoint's; 0 where an earlier run in this dir
    logged but died before its first checkpoint (what it logged is dropped); None for a fresh dir."""
    if resume_from is not None:
        return checkpoints.step(resume_from)
    return 0 if any((run_dir / name).exists() for name in LOGGED) else None


def _recipe(session: Session) -> Outcome:
    """A network run: load, build, encode, train, evaluate, save."""
    plan, accelerator = session.plan, session.accelerator
    data = _load_data(session)
    source = model_source(plan.run.model)
    log.info("Model %s from %s on %s", plan.run.model.name, source, accelerator.device)
    tokenizer = load_tokenizer(source, plan.run.model)
    task = plan.kind.build(plan.run, tokenizer, data.label_names)
    model = load_model(task.model_class, source, plan.run.model, task.model_kwargs(), tokenizer.pad_token_id)
    weights = weights_provenance(source, model.config) if accelerator.is_main_process else {}  # only it writes results
    if plan.run.train.gradient_checkpointing:
        enable_gradient_checkpointing(model, plan.run.model)
    with accelerator.main_process_first():  # one process fills the datasets cache, the others read it
        tokenized = tokenize(data.splits, task, _source_length(plan, task, model), plan.run.dataset.source_prefix)
    encoded = tokenized.splits
    order = LengthGroupedBatches(encoded["train"]["length"], plan.run.train.batch_size, plan.run.train.seed) \
        if plan.method.trains else None
    model = plan.method.prepare(model, plan.run.model, task, planned_steps(len(order), plan.run.train)[0] if order else 0)
    params = count_parameters(model)
    log.info("Method %s: %s of %s parameters trainable (%.2f%%)", plan.run.method.name,
             f"{params['trainable']:,}", f"{params['total']:,}", 100 * params["trainable"] / params["total"])
    model = accelerator.prepare(model)

    evaluated = [role for role in ("validation", "test") if role in encoded]
    cached = (["train"] if plan.method.trains else []) + evaluated
    features = frozen_features(plan, accelerator.unwrap_model(model), task, {r: encoded[r] for r in cached}, accelerator)
    loader = _loader_maker(session, features, encoded, task)
    batch_size = plan.run.train.evaluation_batch_size
    loaders = {role: loader(role, task.collate_eval, sorted_batches(encoded[role]["length"], batch_size))
               for role in evaluated}
    with features.replaying():
        training, metrics = _train(session, model, task, loader("train", task.collate, order), order, loaders) \
            if plan.method.trains else ({}, {})
        task = _evaluate(session, model, task, loaders, metrics, training.get("optimizer_steps", 0))
    peak = _log_final(session, metrics, training.get("optimizer_steps", 0))
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), task.processor, session.run_dir / "model")
    return _outcome(session, data, task, params, metrics, training, tokenized, source, features, peak, weights)


def _load_data(session: Session) -> LabelledSplits:
    run = session.plan.run
    set_seed(run.train.seed)
    with session.accelerator.main_process_first():  # one process fills the datasets cache, the others read it
        data = load_splits(run.dataset, session.plan.kind, run.train.seed)
    log.info("Data %s: %s; labels %s", run.dataset.name,
             ", ".join(f"{role} {len(split)}" for role, split in data.splits.items()), list(data.label_names))
    return data


def _loader_maker(session: Session, features: FrozenFeatures, encoded: dict[str, Any],
                  task: Task) -> Callable[..., DataLoader]:
    """loader(role, collate, batch_sampler): a prepared DataLoader of `role`, on its cached frozen states if any."""
    workers = loader_workers(session.plan.run.hardware, session.plan.kind.decodes_in_loader)

    def loader(role: str, collate: Callable, batch_sampler: Any) -> DataLoader:
        dataset, collate = features.attach(role, encoded[role].remove_columns("length"), collate)
        return session.accelerator.prepare(make_loader(dataset, collate, batch_sampler, workers))

    return loader


def _train(session: Session, model: nn.Module, task: Task, train_loader: DataLoader, order: LengthGroupedBatches,
           loaders: dict[str, DataLoader]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The training loop; then the best epoch's weights back in the model. Returns the loop's summary
    for results.json and the best epoch's validation metrics."""
    plan, accelerator = session.plan, session.accelerator
    best = BestCheckpoint(session.run_dir / "checkpoints")
    trainer = Trainer(compiled(model, plan.run.hardware), train_loader, order, loaders["validation"], plan.run.train,
                      task, plan.method, accelerator, session.tracker, session.checkpoints, best, session.stop,
                      prune=pruner_of(plan.run.trial))
    summary = trainer.fit(session.resume_from, plan.config_hash)
    best.restore(accelerator.unwrap_model(model))
    training = {key: value for key, value in vars(summary).items() if key != "best_validation"}
    return training, {"validation": summary.best_validation}


def _evaluate(session: Session, model: nn.Module, task: Task, loaders: dict[str, DataLoader],
              metrics: dict[str, dict[str, float]], step: int) -> Task:
    """Score the splits training did not (test; validation too for a method that does not train),
    writing generated samples; returns the task as the validation calibrated it."""
    for role, loader in loaders.items():
        if role not in metrics:
            evaluation = evaluate(model, loader, task, session.accelerator, session.plan.method)
            metrics[role] = evaluation.metrics
            if session.accelerator.is_main_process:
                _write_samples(evaluation.samples, session.run_dir / f"samples_{role}.jsonl", session.tracker, role, step)
        if role == "validation":
            task = task.calibrated(metrics[role])  # e.g. the test split uses the validation's threshold
    return task


def _outcome(session: Session, data: LabelledSplits, task: Task, params: dict[str, int],
             metrics: dict[str, dict[str, float]], training: dict[str, Any], tokenized: Tokenized, source: str,
             features: FrozenFeatures, peak: float, weights: dict[str, Any]) -> Outcome:
    # the training split's frozen features, if this run computed them, count as training time
    loop_seconds = training.get("train_seconds", 0.0)
    train_seconds = loop_seconds + features.seconds("train")
    samples = training.get("train_samples_per_second", 0.0) * loop_seconds
    return Outcome(
        metrics=metrics, main_metric=task.main_metric, label_names=list(data.label_names), params=params,
        train_seconds=train_seconds, train_samples_per_second=samples / train_seconds if train_seconds else 0.0,
        peak_memory_mb=peak, truncated={"max_length": tokenized.max_length, **tokenized.truncated}, training=training,
        model_source=source, device=str(session.accelerator.device), precision=run_precision(session.accelerator),
        frozen_features=features.report, provenance={"data": data.provenance, "weights": weights},
    )


def _source_length(plan: Plan, task: Task, model: nn.Module) -> int:
    """Source tokens kept per input: the configured length, cut (and logged) where a sequence would
    outgrow the model's position embeddings, e.g. a 512-position GPT-Neo summarizing 512-token articles."""
    run = plan.run
    requested = run.dataset.max_source_length or run.model.max_length
    _warn_if_shadowed(plan)
    positions = getattr(model.config, "max_position_embeddings", None)  # None: relative positions (T5)
    if positions is None:
        return requested
    virtual = plan.method.reserved_positions()  # soft prompts and prefixes take positions too
    available = positions - virtual - task.positions_after_source()
    if available < 1:
        lower = "dataset.max_target_length, generation.max_new_tokens or method.num_virtual_tokens" \
            if plan.generates_text else "method.num_virtual_tokens"
        raise UserError(f"model: {run.model.name} has {positions} positions, fewer than the {positions - available} that "
                        f"the output and any virtual tokens take; lower {lower}")
    if requested > available:
        log.warning("Inputs cut to %d tokens (not %d): %s has %d positions, and %d go to virtual tokens, the separator, "
                    "the summary or the generated tokens", available, requested, run.model.name, positions,
                    positions - available)
    return min(requested, available)


def _warn_if_shadowed(plan: Plan) -> None:
    """Say so when the input length the user set is not the one used: dataset.max_source_length,
    set by a preset or the data set's config, wins over model.max_length."""
    run = plan.run
    given = {override.lstrip("+").split("=", 1)[0] for override in run.overrides}
    if run.dataset.max_source_length and "model.max_length" in given and "dataset.max_source_length" not in given:
        log.warning("model.max_length=%d is not the input length: dataset.max_source_length=%d (from a preset or the "
                    "data set's config) wins; set dataset.max_source_length instead", run.model.max_length,
                    run.dataset.max_source_length)


def _standalone(session: Session) -> Outcome:
    """Methods outside the training loop (the classic baselines): the same results fields."""
    plan = session.plan
    data = _load_data(session)
    source = model_source(plan.run.model) if plan.method.uses_model else None
    task = plan.kind.build(plan.run, None, data.label_names)  # only its metrics are used
    outcome = plan.method.fit_standalone(plan.run, plan.kind, data, task, source, session.accelerator.device,
                                         session.run_dir / "model")
    peak = _log_final(session, outcome.metrics, step=0)
    return Outcome(
        metrics=outcome.metrics, main_metric=task.main_metric, label_names=list(data.label_names),
        params=outcome.params, train_seconds=outcome.train_seconds,
        train_samples_per_second=outcome.train_samples_per_second, peak_memory_mb=peak, truncated=outcome.truncated,
        training={}, model_source=source, device=str(session.accelerator.device),
        precision="fp32",  # scikit-learn, and an encoder run without autocast
        frozen_features={},  # the SVM's embeddings are cached whole; their time is in train_seconds
        provenance={"data": data.provenance, "weights": weights_provenance(source, None) if source else {}},
    )


def _log_final(session: Session, metrics: dict[str, dict[str, float]], step: int) -> float:
    """Every split's final metrics and the run's peak memory to TensorBoard; returns the peak."""
    peak_mb = session.memory.peak_mb(session.accelerator.device)
    for role, values in metrics.items():
        session.tracker.log(f"final_{role}", values, step)
    session.tracker.log("system", {"peak_memory_mb": peak_mb}, step)
    return peak_mb


def _write_samples(samples: list[dict[str, Any]], path: Path, tracker: Trackers, role: str, step: int) -> None:
    """Generated texts next to their references: all in a jsonl file, the first few in TensorBoard."""
    if not samples:
        return
    write_text_atomic(path, "".join(json.dumps(sample, ensure_ascii=False) + "\n" for sample in samples))
    for index, sample in enumerate(samples[:SAMPLES_IN_TENSORBOARD]):
        tracker.text(f"samples_{role}/{index}", "\n\n".join(f"**{key}**: {value}" for key, value in sample.items()), step)
