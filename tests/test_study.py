"""finetune-study: the protocol end to end on the tiny BERT (searches, replicates, a baseline, the
report), resuming without training again, and bad study configs as one line with exit 2."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import run_in_process, tiny_args
from finetune.study import main


def study_args(tiny_bert, sentiment_dir, root) -> list[str]:
    fixed = [arg for arg in tiny_args(tiny_bert, sentiment_dir) if not arg.startswith("train.lr=")]
    return [*fixed, "model.max_length=32", "dataset.max_train_samples=64", "study.methods=[full,lora,svm_tfidf]",
            "study.trials=3", "study.seeds=2", "study.max_epochs=2", f"study.dir={root}", "study.sampler=random"]


def best_method(rows: list[dict[str, str]]) -> str:
    return max(rows, key=lambda row: float(row["validation"]))["method"]


def finished(root) -> dict[str, str]:
    return {str(path.relative_to(root)): json.loads(path.read_text())["finished_at"]
            for path in root.rglob("results.json")}


@pytest.mark.slow
def test_a_study_searches_replicates_and_reports_each_method(tiny_bert, sentiment_dir, tmp_path, monkeypatch):
    root = tmp_path / "study"
    command = [sys.executable, "-m", "finetune.study", *study_args(tiny_bert, sentiment_dir, root)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((root / "search" / "full").glob("*/results.json"))) == 3  # the same budget for each method
    assert len(list((root / "search" / "lora").glob("*/results.json"))) == 3
    rows = list(csv.DictReader(open(root / "report.csv")))
    assert sorted(row["method"] for row in rows) == ["full", "lora", "svm_tfidf"]  # one row a method
    by_method = {row["method"]: row for row in rows}
    assert by_method["full"]["n"] == "2" and by_method["lora"]["n"] == "2" and by_method["svm_tfidf"]["n"] == "2"
    chosen = yaml.safe_load((root / "search" / "lora" / "optimization_results.yaml").read_text())["best_params"]
    replicate = json.loads(next((root / "replicates" / "lora").glob("*/results.json")).read_text())
    assert replicate["config"]["train"]["lr"] == chosen["train.lr"]  # the replicates train the chosen settings
    assert replicate["config"]["method"]["r"] == chosen["method.r"]
    seeds = sorted(json.loads(path.read_text())["config"]["train"]["seed"]
                   for path in (root / "replicates" / "lora").glob("*/results.json"))
    assert seeds == [1, 2]  # new seeds, paired across methods
    study = (root / "study.md").read_text()
    assert "test_vs_best" in study and "## Cost" in study and "- search: 6 runs" in study
    assert "- replicates: 4 runs" in study and "- baselines: 2 runs" in study
    assert f"| lora | train.lr={chosen['train.lr']:.3g}, method.r={chosen['method.r']} |" in study
    assert all(row["test_vs_best"] for row in rows if row["method"] != best_method(rows))  # paired with the best
    assert (root / "search_trace.png").stat().st_size > 0
    assert list(root.glob("*_quality_vs_params.png")) and list(root.glob("*_learning_curves.png"))

    # the same command again, its stages in this process (the first run showed them as processes)
    before = finished(root)
    stages = []

    def in_process(command: list[str]) -> subprocess.CompletedProcess:
        stages.append(run_in_process(*command[3:]))  # [python, -m, finetune, -m, ...] -> finetune -m ...
        return subprocess.CompletedProcess(command, stages[-1].returncode)

    monkeypatch.setattr("finetune.study.subprocess.run", in_process)
    main(study_args(tiny_bert, sentiment_dir, root))
    assert [stage.returncode for stage in stages] == [0] * 5  # two searches, two replicate sweeps, the baseline
    assert finished(root) == before  # every stage resumes: nothing is trained again


@pytest.mark.parametrize(("args", "message"), [
    (["study.methods=[full,nope]"], "study.methods: no method 'nope'; choose from adalora, "),
    (["study.trials=0", "study.methods=[full]"], "study.trials: must be >= 1, got 0"),
    ([], "study.methods: name the methods to compare, e.g. \"study.methods=[full,lora]\"; choose from adalora, "),
    (["study.methods=[full]", "method.search=[]"], "method.search: empty for full in conf/method/full.yaml"),
    (["study.methods=[lora]", 'method.search=["method.rank=choice(1,2)"]'],
     "method.search of lora: method.rank: unknown key; LoraSpec allows "),
    (["study.methods=[lora]", 'method.search=["method.r=4"]'], "method.search of lora: 'method.r=4' is no search space"),
    (["study.trails=3"], "study.trails: unknown key; StudySpec allows methods, trials, "),
    (["method=lora"], "method=lora: finetune-study sets method for every stage"),
    (["study.methods=[full]", "study.reference=ia3"], "study.reference: 'ia3' is not among study.methods"),
])
def test_bad_study_configs_are_one_line_with_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(args)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_sampler_and_pruner_arguments_go_to_the_searches_alone(tiny_bert, sentiment_dir, tmp_path):
    from finetune.study import arms, check, parse, split

    spec, overrides = parse([*study_args(tiny_bert, sentiment_dir, tmp_path), "study.pruner=median",
                             "hydra.sweeper.pruner.n_startup_trials=1", "+hydra.sweeper.sampler.n_startup_trials=2"])
    check(spec)
    assert [arm.method for arm in arms(spec, overrides)] == ["full", "lora", "svm_tfidf"]  # composed without them
    assert split(overrides)[1] == ["hydra.sweeper.pruner.n_startup_trials=1", "+hydra.sweeper.sampler.n_startup_trials=2"]


def test_the_cost_counts_each_stage_and_what_pruning_saved():
    from finetune.study_report import cost

    def row(run, status, seconds):
        return {"run": run, "status": status, "train_s": seconds}

    spent = cost([row("search/lora/000_x", "completed", 10.0), row("search/lora/001_x", "completed", 20.0),
                  row("search/lora/002_x", "pruned", 5.0), row("search/full/000_x", "pruned", 3.0),
                  row("replicates/lora/000_x", "completed", 12.0)])
    assert spent["stages"] == {"search": {"runs": 4, "seconds": 38.0}, "replicates": {"runs": 1, "seconds": 12.0}}
    assert spent["pruned"] == 2 and spent["saved_seconds"] == 10.0  # full's search has no completed trial to compare
    assert spent["seconds"] == 50.0
