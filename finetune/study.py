"""finetune-study: a fair method comparison in one command.

    finetune-study model=distilbert dataset=sst2 "study.methods=[full,lora,ia3,svm_tfidf]" study.trials=12 study.seeds=3

For each method: a search with the same number of trials over the search space its YAML declares
(`method.search`), every trial trained up to `study.max_epochs` with early stopping, the best trial
chosen on validation; the chosen settings trained again with `study.seeds` new seeds (the search's
own run is not reused: its score was the one selected); baselines (methods with nothing to search)
with the same seeds, no search. Then the study's report in its folder. Every stage is one `finetune -m` sweep in a folder of
its own, run through the configured Hydra launcher, so the same command resumes each stage where it
stopped. The study's other arguments are overrides for every run (model, data set, hardware,
`hydra/launcher=...`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from finetune.errors import EXIT_BAD_INPUT, USER_ERRORS, UserError, one_line
from finetune.plan import CONF_DIR, Plan, compose_plan
from finetune.search import distribution

EXIT_INTERRUPTED = (130, 143)  # a stage stopped by SIGINT or SIGTERM: the study stops too, and resumes
MANAGED = ("method", "train.seed", "train.epochs", "train.early_stopping_patience", "hydra.sweep.dir",
           "hydra/sweeper", "hydra/sweeper/sampler", "hydra/sweeper/pruner", "hydra.sweeper.n_trials",
           "hydra.sweeper.n_jobs", "hydra.sweeper.params")  # set by the study for every stage
SEARCH_ONLY = ("hydra.sweeper.sampler.", "hydra.sweeper.pruner.")  # overrides for the search stages alone


@dataclass
class StudySpec:
    """The `study.*` keys."""

    methods: List[str] = field(default_factory=list)  # names of conf/method YAMLs; required
    trials: int = 12  # each searched method's trial budget, the same for all
    seeds: int = 3  # replicates of each method's chosen settings, seeds 1..N (paired across methods)
    reference: str = "best"  # the report's paired comparison: a method's name, or the validation-best
    max_epochs: int = 10  # every run's cap; early stopping ends it sooner
    patience: int = 2  # epochs without a better validation before a run stops
    sampler: str = "tpe"  # hydra/sweeper/sampler
    pruner: str = "none"  # hydra/sweeper/pruner
    sampler_seed: int = 0
    jobs: int = 1  # trials launched at a time (parallel with hydra/launcher=joblib)
    dir: str = ""  # the study's folder; empty: outputs/studies/<model>_<dataset>


@dataclass(frozen=True)
class Arm:
    """One method of the study: its composed plan and search space (empty for a baseline)."""

    method: str
    plan: Plan
    search: tuple[str, ...]

    @property
    def baseline(self) -> bool:
        return not self.plan.method.trains or self.plan.method.standalone


def parse(argv: list[str]) -> tuple[StudySpec, list[str]]:
    """The study's keys, and the overrides for every run."""
    study_args = [arg.removeprefix("study.") for arg in argv if arg.startswith("study.")]
    overrides = [arg for arg in argv if not arg.startswith("study.")]
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group in MANAGED or override.is_sweep_override():
            raise UserError(f"{override.input_line}: finetune-study sets {override.key_or_group} for every stage; "
                            "give study.methods, study.seeds, study.max_epochs, study.patience or study.trials")
    try:
        spec = OmegaConf.merge(OmegaConf.structured(StudySpec), OmegaConf.from_dotlist(study_args))
    except USER_ERRORS as error:
        raise UserError(f"study.{one_line(error)}") from None
    return StudySpec(**OmegaConf.to_container(spec)), overrides


def check(spec: StudySpec) -> None:
    known = sorted(path.stem for path in (CONF_DIR / "method").glob("*.yaml"))
    if not spec.methods:
        raise UserError(f"study.methods: name the methods to compare, e.g. \"study.methods=[full,lora]\"; "
                        f"choose from {', '.join(known)}")
    for method in spec.methods:
        if method not in known:
            raise UserError(f"study.methods: no method '{method}'; choose from {', '.join(known)}")
    for key in ("trials", "seeds", "max_epochs", "patience", "jobs"):
        if getattr(spec, key) < 1:
            raise UserError(f"study.{key}: must be >= 1, got {getattr(spec, key)}")
    if spec.reference not in ("best", *spec.methods):
        raise UserError(f"study.reference: '{spec.reference}' is not among study.methods; give one of them or best")
    if len(set(spec.methods)) != len(spec.methods):
        raise UserError(f"study.methods: a method is named twice in {spec.methods}")


def split(overrides: list[str]) -> tuple[list[str], list[str]]:
    """The overrides for every stage, and those for the search stages alone (sampler and pruner arguments)."""
    searching = [override for override in overrides if override.lstrip("+").startswith(SEARCH_ONLY)]
    return [override for override in overrides if override not in searching], searching


def arms(spec: StudySpec, overrides: list[str]) -> list[Arm]:
    """Each method composed with the overrides, and once more with a point of its search space, so
    that an unknown search key or a refused combination stops the study before anything trains."""
    overrides, found = split(overrides)[0], []
    with tempfile.TemporaryDirectory() as scratch:
        for method in spec.methods:
            base = [*overrides, f"method={method}", f"train.epochs={spec.max_epochs}"]
            plan = compose_plan(base, scratch)
            arm = Arm(method, plan, tuple(plan.run.method.search))
            if not arm.baseline and not arm.search:
                raise UserError(f"method.search: empty for {method} in conf/method/{method}.yaml; a method that "
                                "trains needs a search space there (e.g. \"train.lr=tag(log, interval(1e-5, 1e-3))\")")
            if arm.search:
                try:
                    compose_plan([*base, *(sample(item) for item in arm.search)], scratch)
                except USER_ERRORS as error:
                    raise UserError(f"method.search of {method}: {one_line(error)}") from None
            found.append(arm)
    return found


def sample(item: str) -> str:
    """One point of a search override (`key=choice(...)` -> `key=<first choice>`), as an override."""
    try:
        override = OverridesParser.create().parse_override(item)
    except USER_ERRORS as error:
        raise UserError(f"'{item}' {one_line(error)}") from None
    if not override.is_sweep_override():
        raise UserError(f"'{item}' is no search space; give choice(...), range(...), "
                        "interval(...) or tag(log, interval(...))")
    space = distribution(override)
    point = space.choices[0] if hasattr(space, "choices") else space.low
    return f"{override.key_or_group}={point}"


def study_dir(spec: StudySpec, first: Arm) -> Path:
    run = first.plan.run
    return Path(spec.dir or f"outputs/studies/{run.model.name}_{run.dataset.name}")


def stage(args: list[str], label: str) -> int:
    """One `finetune -m` sweep in a process of its own; its exit code (1: some of its jobs failed)."""
    print(f"finetune-study: {label}", flush=True)
    code = subprocess.run([sys.executable, "-m", "finetune", "-m", *args]).returncode
    if code in EXIT_INTERRUPTED:
        print(f"finetune-study: interrupted during {label}; the same command resumes", file=sys.stderr)
        sys.exit(code)
    if code == EXIT_BAD_INPUT:
        print(f"finetune-study: error: {label} refused its input (above)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    return code


def chosen(search_dir: Path) -> dict[str, Any] | None:
    """The search's best trial's parameters, None when no trial completed."""
    path = search_dir / "optimization_results.yaml"
    return yaml.safe_load(path.read_text())["best_params"] if path.exists() else None


def run_study(spec: StudySpec, overrides: list[str], found: list[Arm], root: Path) -> dict[str, str]:
    """Every stage, in order; returns what became of each method ("searched", "baseline", or why not)."""
    every, searching = split(overrides)
    common = [*every, f"train.epochs={spec.max_epochs}", f"train.early_stopping_patience={spec.patience}"]
    outcome = {}
    for arm in found:
        seeds = ",".join(str(seed) for seed in range(1, spec.seeds + 1))
        if arm.baseline:  # nothing to search; the same seeds as the others, so that differences pair
            stage([*common, f"method={arm.method}", f"train.seed={seeds}",
                   f"hydra.sweep.dir={root / 'baselines' / arm.method}"], f"baseline {arm.method}: seeds {seeds}")
            outcome[arm.method] = "baseline"
            continue
        search_dir = root / "search" / arm.method
        stage([*common, f"method={arm.method}", "hydra/sweeper=optuna", f"hydra/sweeper/sampler={spec.sampler}",
               f"hydra/sweeper/pruner={spec.pruner}", f"hydra.sweeper.sampler.seed={spec.sampler_seed}",
               f"hydra.sweeper.n_trials={spec.trials}", f"hydra.sweeper.n_jobs={spec.jobs}",
               f"hydra.sweep.dir={search_dir}", *searching, *arm.search],
              f"search {arm.method}: {spec.trials} trials in {search_dir}")
        best = chosen(search_dir)
        if best is None:
            outcome[arm.method] = "no trial of its search completed"
            continue
        stage([*common, f"method={arm.method}", *(f"{key}={value}" for key, value in best.items()),
               f"train.seed={seeds}", f"hydra.sweep.dir={root / 'replicates' / arm.method}"],
              f"replicates {arm.method}: {best} with seeds {seeds}")
        outcome[arm.method] = "searched"
    return outcome


def main(argv: list[str] | None = None) -> None:
    """Console entry point of finetune-study."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return
    try:
        spec, overrides = parse(argv)
        check(spec)
        found = arms(spec, overrides)
    except USER_ERRORS as error:
        print(f"finetune-study: error: {one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    root = study_dir(spec, found[0])
    outcome = run_study(spec, overrides, found, root)
    from finetune.study_report import write_study_report  # matplotlib loads only for the report

    print(write_study_report(root, protocol(spec), spec.reference, outcome, ["finetune-study", *argv]))


def protocol(spec: StudySpec) -> str:
    """The protocol in a paragraph, for study.md."""
    return (f"Each searched method: {spec.trials} trials ({spec.sampler} sampler, pruner {spec.pruner}) over its "
            f"`method.search`, up to {spec.max_epochs} epochs with early stopping after {spec.patience} without a "
            f"better validation score; the trial with the best validation score chosen; its settings trained again "
            f"with seeds 1-{spec.seeds}. Baselines (nothing to search): the same seeds. Test columns: mean ± std over the seeds; "
            f"`test_vs_{spec.reference}`: the paired difference by seed with its 95% interval.")


if __name__ == "__main__":
    main()
