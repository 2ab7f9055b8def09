"""The recipe every run follows, top to bottom: set up, train, evaluate, save."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from typing import Any, Callable

from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from finetune.artifacts import ResultsFile, Tracker, save_model
from finetune.files import write_text_atomic
from finetune.batching import LengthGroupedBatches, make_loader, sorted_batches, tokenize
from finetune.checkpoint import BestCheckpoint, Checkpoints
from finetune.data import load_splits
from finetune.engine import Trainer, evaluate, planned_steps
from finetune.errors import Interrupted, RunError, UserError
from finetune.feature_cache import frozen_features
from finetune.hardware import PeakMemory, agree_on_processes, compiled, loader_workers, make_accelerator, run_precision
from finetune.methods import Method, build_method, count_parameters
from finetune.models import load_model, load_tokenizer, model_source
from finetune.record import Outcome
from finetune.schema import Run
from finetune.signals import StopSignals, stop_on_signals
from finetune.tasks import Task, build_task, task_kind
from finetune.tasks.columns import LabelledSplits

log = logging.getLogger(__name__)

SAMPLES_IN_TENSORBOARD = 5
# a full disk, a quota, a read-only or forbidden folder: the run ends with one line, not a traceback
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def execute(run: Run) -> dict[str, Any]:
    """Run one experiment, resuming from the newest checkpoint in its run dir if there is one.

    results.json says `completed` only if every step finished, `interrupted` after SIGTERM (a
    checkpoint was saved) and `failed` with the error otherwise.
    """
    accelerator = make_accelerator(run.hardware, run.train.grad_accum)
    run = agree_on_processes(run, accelerator)
    main = accelerator.is_main_process  # only the main process writes files
    checkpoints = Checkpoints(Path(run.output_dir) / "checkpoints", run.train.keep_checkpoints)
    resume_from = checkpoints.latest()
    results = ResultsFile(run, write=main)
    # purge_step drops TensorBoard events written after the checkpoint by the run that died
    tracker = Tracker(Path(run.output_dir) / "tensorboard", purge_step=checkpoints.step(resume_from), write=main)
    memory = PeakMemory()
    try:
        with stop_on_signals() as stop:
            outcome = _execute(run, accelerator, tracker, memory, checkpoints, resume_from, stop)
            tracker.hparams(run, outcome)
            return results.complete(outcome)
    except Interrupted as error:
        results.interrupt(error)
        raise
    except OSError as error:
        results.fail(error)
        if error.errno not in WRITE_ERRORS:
            raise
        raise RunError(f"cannot write {error.filename or 'a file'} ({error.strerror}); free space or fix the "
                       "permissions, then run the same command again: it resumes from the last checkpoint") from error
    except BaseException as error:
        results.fail(error)
        raise
    finally:
        memory.stop()
        tracker.close()


def _execute(run: Run, accelerator: Accelerator, tracker: Tracker, memory: PeakMemory, checkpoints: Checkpoints,
             resume_from: Path | None, stop: StopSignals) -> Outcome:
    run_dir = Path(run.output_dir)
    set_seed(run.train.seed)
    with accelerator.main_process_first():  # one process fills the datasets cache, the others read it
        data = load_splits(run.dataset, run.train.seed)
    log.info("Data %s: %s; labels %s", run.dataset.name,
             ", ".join(f"{role} {len(split)}" for role, split in data.splits.items()), list(data.label_names))
    method = build_method(run.method)
    if method.standalone:
        return _execute_standalone(run, method, data, tracker, memory, accelerator)

    source = model_source(run.model)
    log.info("Model %s from %s on %s", run.model.name, source, accelerator.device)
    tokenizer = load_tokenizer(source, run.model)
    task = build_task(run, tokenizer, data.label_names)
    model = load_model(task.model_class, source, run.model, task.model_kwargs(), tokenizer.pad_token_id)
    max_length = _fit_source_length(run, method, task, model)
    with accelerator.main_process_first():
        tokenized = tokenize(data.splits, task, max_length, run.dataset.source_prefix)
    encoded = tokenized.splits
    batches = LengthGroupedBatches(encoded["train"]["length"], run.train.batch_size, run.train.seed) if method.trains else None
    total_steps = planned_steps(len(batches), run.train)[0] if batches else 0
    model = method.prepare(model, run.model, task, total_steps)
    params = count_parameters(model)
    log.info("Method %s: %s of %s parameters trainable (%.2f%%)", run.method.name,
             f"{params['trainable']:,}", f"{params['total']:,}", 100 * params["trainable"] / params["total"])

    model = accelerator.prepare(model)
    eval_roles = [role for role in ("validation", "test") if role in encoded]
    roles = (["train"] if method.trains else []) + eval_roles
    features = frozen_features(run, method, accelerator.unwrap_model(model), task,
                               {role: encoded[role] for role in roles}, accelerator)

    workers = loader_workers(run.hardware, task_kind(run.dataset.task).decodes_in_loader)

    def loader(role: str, collate: Callable, batch_sampler) -> DataLoader:
        dataset, collate = features.attach(role, encoded[role].remove_columns("length"), collate)
        return accelerator.prepare(make_loader(dataset, collate, batch_sampler, workers))

    eval_batch_size = run.train.evaluation_batch_size
    loaders = {role: loader(role, task.collate_eval, sorted_batches(encoded[role]["length"], eval_batch_size))
               for role in eval_roles}
    training: dict[str, Any] = {}
    metrics: dict[str, dict[str, float]] = {}
    with features.replaying():
        if method.trains:
            best = BestCheckpoint(run_dir / "checkpoints")
            trainer = Trainer(compiled(model, run.hardware), loader("train", task.collate, batches), batches,
                              loaders["validation"], run.train, task, method, accelerator, tracker, checkpoints, best, stop)
            summary = trainer.fit(resume_from, run.config_hash())
            best.restore(accelerator.unwrap_model(model))
            training = {key: value for key, value in vars(summary).items() if key != "best_validation"}
            metrics["validation"] = summary.best_validation
        final_step = training.get("optimizer_steps", 0)
        for role, eval_loader in loaders.items():
            if role not in metrics:
                evaluation = evaluate(model, eval_loader, task, accelerator, method)
                metrics[role] = evaluation.metrics
                if accelerator.is_main_process:
                    _write_samples(evaluation.samples, run_dir / f"samples_{role}.jsonl", tracker, role, final_step)
            if role == "validation":
                task = task.calibrated(metrics[role])  # e.g. the test split uses the validation's threshold
    peak = _log_final(tracker, metrics, memory.peak_mb(accelerator.device), final_step)

    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), task.processor, run_dir / "model")
    # the training split's frozen features, if this run computed them, count as training time
    loop_seconds = training.get("train_seconds", 0.0)
    train_seconds = loop_seconds + features.seconds("train")
    samples = training.get("train_samples_per_second", 0.0) * loop_seconds
    return Outcome(
        metrics=metrics, main_metric=task.main_metric, label_names=list(data.label_names), params=params,
        train_seconds=train_seconds, train_samples_per_second=samples / train_seconds if train_seconds else 0.0,
        peak_memory_mb=peak, truncated={"max_length": tokenized.max_length, **tokenized.truncated}, training=training,
        model_source=source, device=str(accelerator.device), precision=run_precision(accelerator),
        frozen_features=features.report,
    )


def _fit_source_length(run: Run, method: Method, task: Task, model: nn.Module) -> int:
    """Source tokens kept per input: the configured length, cut (and logged) where a sequence would
    outgrow the model's position embeddings, e.g. a 512-position GPT-Neo summarizing 512-token articles."""
    requested = run.dataset.max_source_length or run.model.max_length
    _warn_if_shadowed(run)
    positions = getattr(model.config, "max_position_embeddings", None)  # None: relative positions (T5)
    if positions is None:
        return requested
    virtual = method.reserved_positions()  # soft prompts and prefixes take positions too
    available = positions - virtual - task.positions_after_source()
    if available < 1:
        raise UserError(f"model: {run.model.name} has {positions} positions, fewer than the {positions - available} that "
                        "the output and any virtual tokens take; lower dataset.max_target_length, generation.max_new_tokens "
                        "or method.num_virtual_tokens")
    if requested > available:
        log.warning("Inputs cut to %d tokens (not %d): %s has %d positions, and %d go to virtual tokens, the separator, "
                    "the summary or the generated tokens", available, requested, run.model.name, positions,
                    positions - available)
    return min(requested, available)


def _warn_if_shadowed(run: Run) -> None:
    """Say so when the input length the user set is not the one used: dataset.max_source_length,
    set by a preset or the data set's config, wins over model.max_length."""
    given = {override.lstrip("+").split("=", 1)[0] for override in run.overrides}
    if run.dataset.max_source_length and "model.max_length" in given and "dataset.max_source_length" not in given:
        log.warning("model.max_length=%d is not the input length: dataset.max_source_length=%d (from a preset or the "
                    "data set's config) wins; set dataset.max_source_length instead", run.model.max_length,
                    run.dataset.max_source_length)


def _execute_standalone(run: Run, method: Method, data: LabelledSplits, tracker: Tracker, memory: PeakMemory,
                        accelerator: Accelerator) -> Outcome:
    """Methods outside the training loop (the classic baselines): the same results fields."""
    source = model_source(run.model) if method.uses_model else None
    task = build_task(run, None, data.label_names)  # only its metrics are used
    outcome = method.fit_standalone(run, data, task, source, accelerator.device, Path(run.output_dir) / "model")
    peak = _log_final(tracker, outcome.metrics, memory.peak_mb(accelerator.device), step=0)
    return Outcome(
        metrics=outcome.metrics, main_metric=task.main_metric, label_names=list(data.label_names),
        params=outcome.params, train_seconds=outcome.train_seconds,
        train_samples_per_second=outcome.train_samples_per_second, peak_memory_mb=peak, truncated=outcome.truncated,
        training={}, model_source=source, device=str(accelerator.device),
        precision="fp32",  # scikit-learn, and an encoder run without autocast
        frozen_features={},  # the SVM's embeddings are cached whole; their time is in train_seconds
    )


def _log_final(tracker: Tracker, metrics: dict[str, dict[str, float]], peak_mb: float, step: int) -> float:
    """Every split's final metrics and the run's peak memory to TensorBoard; returns the peak."""
    for role, values in metrics.items():
        tracker.log(f"final_{role}", values, step)
    tracker.log("system", {"peak_memory_mb": peak_mb}, step)
    return peak_mb


def _write_samples(samples: list[dict[str, Any]], path: Path, tracker: Tracker, role: str, step: int) -> None:
    """Generated texts next to their references: all in a jsonl file, the first few in TensorBoard."""
    if not samples:
        return
    write_text_atomic(path, "".join(json.dumps(sample, ensure_ascii=False) + "\n" for sample in samples))
    for index, sample in enumerate(samples[:SAMPLES_IN_TENSORBOARD]):
        tracker.text(f"samples_{role}/{index}", "\n\n".join(f"**{key}**: {value}" for key, value in sample.items()), step)
