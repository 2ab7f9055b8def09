"""Every record says how it was made: finetune's code (commit, dirty), the command, the machine, the
data's and the weights' digests; finetune-report flags rows made with other versions or machines."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from finetune import environment
from finetune.cache import file_digest, folder_digest
from finetune.provenance import data_provenance, weights_provenance
from finetune.report import main as report
from finetune.runner import execute


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_completed_run_records_its_code_command_machine_data_and_weights(tiny_plan, tiny_bert, sentiment_dir,
                                                                           monkeypatch):
    monkeypatch.setattr("sys.argv", ["/somewhere/bin/finetune", "train.lr=1e-3", "dataset.path=a b"])
    plan = tiny_plan("train.max_steps=1")
    execute(plan)
    provenance = json.loads((Path(plan.run.output_dir) / "results.json").read_text())["provenance"]

    assert provenance["command"] == "finetune train.lr=1e-3 'dataset.path=a b'"
    root = Path(__file__).parents[1]
    if (root / ".git").exists():  # the suite runs from a checkout
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert provenance["code"]["git_commit"] == head and isinstance(provenance["code"]["git_dirty"], bool)
    machine = provenance["machine"]
    assert machine["cores"] == os.cpu_count() and machine["gpu_count"] == torch.cuda.device_count()
    assert machine["cpu"] and machine["memory_gb"] > 0
    files = provenance["data"]["files"]
    assert set(files) == {"train", "validation", "test"}
    assert all(entry["digest"] == sha256(Path(entry["file"])) for entry in files.values())
    assert Path(files["train"]["file"]).parent == Path(sentiment_dir)
    weights = provenance["weights"]
    assert weights["source"] == str(tiny_bert) and weights["files"]["model.safetensors"] == sha256(tiny_bert / "model.safetensors")


def test_a_failed_run_still_says_where_and_how_it_ran(tiny_plan):
    plan = tiny_plan("train.max_steps=1", "dataset.text_column=missing")
    with pytest.raises(Exception):
        execute(plan)
    provenance = json.loads((Path(plan.run.output_dir) / "results.json").read_text())["provenance"]
    assert {"code", "command", "machine"} <= set(provenance)


def checkout(tmp_path: Path) -> Path:
    """A git checkout holding finetune's package, committed."""
    package = tmp_path / "repo" / "finetune"
    package.mkdir(parents=True)
    shutil.copy(environment.__file__, package / "environment.py")
    git = ["git", "-C", str(package.parent), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    return package


def test_the_commit_and_a_dirty_tree_are_recorded_and_an_install_records_its_version(tmp_path):
    package = checkout(tmp_path)
    clean = environment.code_version.__wrapped__(package)
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    (package / "new_module.py").write_text("")  # untracked and not ignored: it could change results
    assert environment.code_version.__wrapped__(package)["git_dirty"] is True

    installed = tmp_path / "site-packages" / "finetune"
    installed.mkdir(parents=True)
    assert set(environment.code_version.__wrapped__(installed)) == {"version"}


def test_file_digests_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "weights.bin"
    data.write_bytes(b"one")
    assert file_digest(data) == sha256(data)
    [remembered] = list((tmp_path / "cache" / "digests").iterdir())
    remembered.write_text("sha256:planted")  # read back, not hashed again, while the file is unchanged
    assert file_digest(data) == "sha256:planted"
    data.write_bytes(b"other")  # another size: another key, hashed again
    assert file_digest(data) == sha256(data) != "sha256:" + hashlib.sha256(b"one").hexdigest()


def test_a_folder_is_one_remembered_digest_that_changes_with_any_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    images = tmp_path / "images"
    for label in ("cat", "dog"):
        (images / label).mkdir(parents=True)
        for index in range(5):
            (images / label / f"{index}.png").write_bytes(f"{label}{index}".encode())
    first = folder_digest(images)
    assert first.startswith("sha256:") and len(list((tmp_path / "cache" / "digests").iterdir())) == 1
    (images / "dog" / "4.png").write_bytes(b"another dog")
    assert folder_digest(images) != first


def test_weights_provenance_hashes_what_the_loaders_read_and_records_unreadable_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.safetensors", "config.json", "tokenizer.json", "vocab.txt", "optimizer.pt", "rng_state.pth",
                 "trainer_state.json", "notes.md"):
        (model / name).write_text(name)
    found = weights_provenance(str(model), None)
    assert set(found["files"]) == {"model.safetensors", "config.json", "tokenizer.json", "vocab.txt"}
    assert found["files"]["config.json"] == sha256(model / "config.json")

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("finetune.provenance.file_digest", unreadable)
    assert weights_provenance(str(model), None)["files"]["vocab.txt"] == "unreadable (Permission denied)"


def test_the_command_is_the_one_typed_even_in_a_launchers_worker(monkeypatch):
    monkeypatch.delenv(environment.COMMAND_VARIABLE, raising=False)
    monkeypatch.setattr("sys.argv", ["/x/finetune/__main__.py", "-m", "method=lora,full"])
    environment.remember_command()
    assert environment.command_line() == "python -m finetune -m method=lora,full"
    monkeypatch.setattr("sys.argv", ["/x/submitit/worker.py", "job.pkl"])  # a worker's own argv
    assert environment.command_line() == "python -m finetune -m method=lora,full"


def test_hub_inputs_record_their_revisions():
    commit = "0123456789abcdef0123456789abcdef01234567"
    split = SimpleNamespace(cache_files=[{"filename": f"/cache/rotten_tomatoes/default/0.0.0/{commit}/train.arrow"}],
                            _fingerprint="f00d")
    data = data_provenance({"train": None}, {"train": split}, "cornell-movie-review-data/rotten_tomatoes", None)
    assert data["revision"] == commit and data["fingerprints"] == {"train": "f00d"}
    weights = weights_provenance("org/model", SimpleNamespace(_commit_hash=commit))
    assert weights == {"source": "org/model", "revision": commit}


def record(directory: Path, seed: int, torch_version: str, gpus: list[str]) -> None:
    directory.mkdir(parents=True)
    machine = {"cpu": "AMD EPYC", "usable_cores": 2, "gpus": gpus, "gpu_count": len(gpus)}
    (directory / "results.json").write_text(json.dumps({
        "status": "completed", "model": "minilm", "method": "lora", "dataset": "rt", "main_metric": "accuracy",
        "config": {"train": {"seed": seed}}, "metrics": {"validation": {"accuracy": 0.8}, "test": {"accuracy": 0.8}},
        "params": {"trainable": 1, "total": 2}, "versions": {"torch": torch_version, "finetune": "0.1.0"},
        "provenance": {"code": {"version": "0.1.0", "git_commit": "a" * 40, "git_dirty": False}, "machine": machine},
    }))


def test_the_report_flags_runs_made_with_other_versions_or_machines(tmp_path, capsys):
    record(tmp_path / "s1", 1, "2.9.1", [])
    record(tmp_path / "s2", 2, "2.9.1", [])
    record(tmp_path / "s3", 3, "2.8.0", ["NVIDIA H200"])
    report([str(tmp_path)])
    printed = capsys.readouterr().out
    assert "Warning: the runs were not all made with the same versions and machine: " in printed
    assert "machine (AMD EPYC (2 cores), no GPU in 2, AMD EPYC (2 cores), 1x NVIDIA H200 in 1)" in printed
    assert "torch (2.9.1 in 2, 2.8.0 in 1)" in printed
    runs = {row["run"]: row["differs"] for row in csv.DictReader((tmp_path / "runs.csv").open())}
    assert runs == {"s1": "", "s2": "", "s3": "machine, torch"}
    assert "| differs |" in (tmp_path / "report.md").read_text().splitlines()[0].replace(" runs |", "")


def test_runs_of_one_environment_get_no_warning_and_no_column(tmp_path, capsys):
    record(tmp_path / "s1", 1, "2.9.1", [])
    record(tmp_path / "s2", 2, "2.9.1", [])
    report([str(tmp_path)])
    assert "Warning" not in capsys.readouterr().out and "differs" not in (tmp_path / "report.md").read_text()


def test_runs_without_provenance_are_unknown_not_different(tmp_path, capsys):
    record(tmp_path / "s1", 1, "2.9.1", [])
    record(tmp_path / "s2", 2, "2.9.1", [])
    old = json.loads((tmp_path / "s1" / "results.json").read_text())
    del old["provenance"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps({**old, "config": {"train": {"seed": 3}}}))
    broken = {**old, "config": {"train": {"seed": 4}}, "provenance": {"code": "v1", "machine": ["cpu"]}}
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text(json.dumps(broken))
    failed = {**old, "status": "failed", "error": "boom", "provenance": {"machine": {"cpu": "other"}}}
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "results.json").write_text(json.dumps(failed))
    report([str(tmp_path)])
    printed = capsys.readouterr().out
    assert "2 run(s) predate provenance records" in printed  # old and broken; the failed run is not compared
    assert "not all made with the same" not in printed
    runs = {row["run"]: row["differs"] for row in csv.DictReader((tmp_path / "runs.csv").open())}
    assert set(runs.values()) == {""}


def test_an_unknown_dirty_state_is_its_own_environment(tmp_path, capsys):
    record(tmp_path / "s1", 1, "2.9.1", [])
    record(tmp_path / "s2", 2, "2.9.1", [])
    unknown = json.loads((tmp_path / "s2" / "results.json").read_text())
    unknown["provenance"]["code"]["git_dirty"] = None
    (tmp_path / "s2" / "results.json").write_text(json.dumps(unknown))
    report([str(tmp_path)])
    assert "(dirty: unknown) in 1" in capsys.readouterr().out
