"""finetune-report: the table holds exactly what the results.json files say, failed runs included."""

from __future__ import annotations

import csv
import json

import pytest

from finetune.report import collect, main


def write_result(directory, **record):
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(record))


@pytest.fixture
def sweep(tmp_path):
    write_result(
        tmp_path / "0_minilm_lora", model="minilm", method="lora", dataset="rt", status="completed", main_metric="accuracy",
        metrics={"validation": {"accuracy": 0.81}, "test": {"accuracy": 0.8}}, params={"trainable": 50, "total": 1000},
        train_seconds=12.5, train_samples_per_second=80.0, peak_memory_mb=900.0,
    )
    write_result(tmp_path / "1_minilm_full", model="minilm", method="full", dataset="rt", status="failed", error="boom")
    return tmp_path


def test_rows_carry_the_numbers_of_each_results_file(sweep):
    failed, lora = collect([sweep])
    assert (failed["method"], failed["status"], failed["test"]) == ("full", "failed", None)
    assert lora["validation"] == 0.81 and lora["test"] == 0.8
    assert lora["trainable"] == 50 and lora["trainable_%"] == pytest.approx(5.0)
    assert (lora["train_s"], lora["samples_s"], lora["peak_memory_mb"]) == (12.5, 80.0, 900.0)
    assert lora["run"] == "0_minilm_lora"


def test_command_writes_markdown_and_csv_and_prints_the_table(sweep, capsys):
    main([str(sweep)])
    printed = capsys.readouterr().out
    assert "| minilm | lora | rt | completed | accuracy | 0.8100 | 0.8000 | 50 | 5.00 | 12.5 | 80.0 | 900 |" in printed
    assert "| minilm | full | rt | failed |" in printed
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [r["status"] for r in rows] == ["failed", "completed"] and rows[1]["test"] == "0.8"
    assert (sweep / "report.md").read_text() in printed


def test_missing_directory_or_no_results_exit_2(tmp_path, capsys):
    for argv in ([str(tmp_path / "nope")], [str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "no results.json under" in capsys.readouterr().err


def test_plots_are_valid_png_images_per_data_set(sweep, capsys):
    import matplotlib.image

    write_result(
        sweep / "2_bert_lora", model="bert", method="svm_tfidf", dataset="rt", status="completed", main_metric="accuracy",
        metrics={"validation": {"accuracy": 0.7}, "test": {"accuracy": 0.72}}, params={"trainable": 9000, "total": 9000},
        train_seconds=0.5, train_samples_per_second=9000.0, peak_memory_mb=300.0,
    )
    main([str(sweep)])
    printed = capsys.readouterr().out
    names = ("rt_quality_vs_params.png", "rt_quality_vs_time.png", "rt_model_x_method.png")
    for name in names:
        assert name in printed
        path = sweep / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(path).shape
        assert height > 100 and width > 100


def test_hparams_of_a_run_reach_tensorboard(tiny_run):
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from finetune.runner import execute

    run = tiny_run("method=head_only", "train.epochs=1")
    results = execute(run)
    events = EventAccumulator(str(Path(run.output_dir) / "tensorboard" / "hparams")).Reload()
    assert events.Scalars("hparam/test_accuracy")[0].value == pytest.approx(results["metrics"]["test"]["accuracy"])
    assert events.Scalars("hparam/trainable_params")[0].value == results["params"]["trainable"]
    plugin = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugin)
    assert b"train.lr" in plugin["_hparams_/session_start_info"] and b"head_only" in plugin["_hparams_/session_start_info"]
