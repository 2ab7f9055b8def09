"""finetune-report: the table holds exactly what the results.json files say, failed runs included."""

from __future__ import annotations

import csv
import io
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
    (failed, lora), _ = collect([sweep])
    assert (failed["method"], failed["status"], failed["test"]) == ("full", "failed", None)
    assert lora["validation"] == 0.81 and lora["test"] == 0.8
    assert lora["trainable"] == 50 and lora["trainable_%"] == pytest.approx(5.0)
    assert (lora["train_s"], lora["samples_s"], lora["peak_memory_mb"]) == (12.5, 80.0, 900.0)
    assert lora["run"] == "0_minilm_lora"


def test_command_writes_markdown_and_csv_and_prints_the_table(sweep, capsys):
    main([str(sweep)])
    printed = capsys.readouterr().out
    assert "| minilm | lora | rt | completed | 1 | accuracy | 0.8100 | 0.8000 | – | 50 | 5.00 | 12.5 | 80.0 | 900 |" in printed
    assert "| minilm | full | rt | failed | 0 |" in printed  # counted, with no metrics
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [r["status"] for r in rows] == ["failed", "completed"] and rows[1]["test"] == "0.8"
    runs = list(csv.DictReader((sweep / "runs.csv").open()))
    assert [r["run"] for r in runs] == ["1_minilm_full", "0_minilm_lora"]
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


def test_hparams_of_a_run_reach_tensorboard(tiny_plan):
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from finetune.runner import execute

    plan = tiny_plan("method=lora", "train.epochs=1")
    results = execute(plan)
    logdir = Path(plan.run.output_dir) / "tensorboard"
    assert [path.name for path in logdir.iterdir() if path.is_dir()] == []  # one TensorBoard run, not two
    events = EventAccumulator(str(logdir)).Reload()
    assert events.Scalars("hparam/test_accuracy")[0].value == pytest.approx(results.metrics["test"]["accuracy"])
    assert events.Scalars("hparam/trainable_params")[0].value == results.params["trainable"]
    plugin = events.PluginTagToContent("hparams")
    # the session only: TensorBoard builds the experiment from all runs' sessions (see test_sweeps)
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(plugin)
    assert "_hparams_/experiment" not in plugin
    session = plugin["_hparams_/session_start_info"]
    assert b"train.lr" in session and b"lora" in session
    for key in (b"method.r", b"method.alpha", b"method.target_modules", b"dataset.max_train_samples"):
        assert key in session, key


def study_run(directory, method: str, lr: float, seed: int, validation: float, test: float, epochs: int = 2):
    """A completed run's results.json as finetune writes it, with its config and learning curves."""
    config = {"model": {"name": "minilm"}, "method": {"name": method, "r": 8}, "dataset": {"name": "rt"},
              "train": {"lr": lr, "seed": seed, "epochs": epochs}, "output_dir": str(directory), "overrides": []}
    curve = [{"epoch": e + 1, "step": 10 * (e + 1), "accuracy": validation - 0.01 * (epochs - e - 1)} for e in range(epochs)]
    write_result(directory, model="minilm", method=method, dataset="rt", status="completed", main_metric="accuracy",
                 config=config, metrics={"validation": {"accuracy": validation}, "test": {"accuracy": test}},
                 params={"trainable": 50, "total": 1000}, train_seconds=10.0, train_samples_per_second=80.0,
                 peak_memory_mb=900.0,
                 training={"train_loss": [[5 * k, 1.0 / k] for k in range(1, 5)], "validation_curve": curve})


@pytest.fixture
def seeded_study(tmp_path):
    """lora at two learning rates and full, three seeds each: full is best and beats lr 1e-4 on every seed."""
    scores = {("full", 5e-5): [0.84, 0.85, 0.86], ("lora", 1e-4): [0.80, 0.81, 0.83], ("lora", 5e-4): [0.83, 0.85, 0.85]}
    for index, ((method, lr), tests) in enumerate(scores.items()):
        for seed, test in zip((1, 2, 3), tests):
            study_run(tmp_path / f"{index}{seed}_{method}", method, lr, seed, validation=test + 0.01, test=test)
    return tmp_path


def test_seeds_are_replicates_and_swept_keys_are_columns(seeded_study, capsys):
    main([str(seeded_study)])
    printed = capsys.readouterr().out
    header = printed.splitlines()[0]
    assert "| train.lr | status | n |" in header and "train.seed" not in header
    assert "3 runs" not in printed and "9 runs in 3 configurations; swept: train.lr" in printed
    rows = {(row["method"], row["train.lr"]): row for row in csv.DictReader((seeded_study / "report.csv").open())}
    lora = rows["lora", "0.0001"]
    assert lora["n"] == "3"
    assert float(lora["test"]) == pytest.approx(0.8133333, abs=1e-6)
    assert float(lora["test_std"]) == pytest.approx(0.0152753, abs=1e-6)
    assert "0.8133 ± 0.0153" in printed


def test_each_configuration_is_compared_with_the_best_paired_by_seed(seeded_study, capsys):
    main([str(seeded_study)])
    rows = {(row["method"], row["train.lr"]): row for row in csv.DictReader((seeded_study / "report.csv").open())}
    assert rows["full", "5e-05"]["test_vs_best"] == ""  # the best itself
    worse = rows["lora", "0.0001"]  # differences by seed: -0.04, -0.04, -0.03
    assert float(worse["test_vs_best"]) == pytest.approx(-0.0366667, abs=1e-6)
    assert float(worse["test_vs_best_high"]) < 0  # the interval excludes 0: full beats it
    close = rows["lora", "0.0005"]  # -0.01, 0.0, -0.01: the interval includes 0
    assert float(close["test_vs_best_low"]) < 0 < float(close["test_vs_best_high"])


def test_learning_curves_and_error_bars_are_drawn(seeded_study, capsys):
    main([str(seeded_study)])
    printed = capsys.readouterr().out
    for name in ("rt_learning_curves.png", "rt_quality_vs_params.png", "rt_model_x_method.png"):
        assert name in printed and (seeded_study / name).read_bytes()[:4] == b"\x89PNG"


def test_a_family_or_method_fact_is_not_a_swept_key(tmp_path, capsys):
    study_run(tmp_path / "a", "lora", 5e-4, 1, 0.8, 0.8)
    study_run(tmp_path / "b", "full", 5e-4, 1, 0.8, 0.8)
    record = json.loads((tmp_path / "b" / "results.json").read_text())
    record["config"]["method"] = {"name": "full"}  # no rank: full fine-tuning has none
    (tmp_path / "b" / "results.json").write_text(json.dumps(record))
    main([str(tmp_path)])
    assert "swept:" not in capsys.readouterr().out  # method.r exists for lora only; lr and the rest agree


def test_best_keeps_each_methods_validation_best_configuration(seeded_study, capsys):
    main([str(seeded_study), "--best"])
    printed = capsys.readouterr().out
    assert "9 runs in 3 configurations; swept: train.lr; each method's validation-best shown" in printed
    table = [line for line in printed.splitlines() if line.startswith("| minilm")]
    assert len(table) == 2  # full, and lora at 5e-4 (validation 0.8533 beats 0.8233 at 1e-4)
    assert "| minilm | lora | rt | 0.0005 |" in table[1]


def test_runs_csv_holds_each_runs_value_of_the_swept_keys(seeded_study):
    main([str(seeded_study)])
    runs = list(csv.DictReader((seeded_study / "runs.csv").open()))
    assert sorted({row["config.train.lr"] for row in runs}) == ["0.0001", "0.0005", "5e-05"]
    assert {row["seed"] for row in runs} == {"1", "2", "3"}


def test_an_unreadable_results_file_costs_one_row_and_one_warning(seeded_study, capsys):
    broken = seeded_study / "99_broken"
    broken.mkdir()
    (broken / "results.json").write_text('{"status": "compl')  # a copy cut short
    main([str(seeded_study)])
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "99_broken/results.json: cannot be read" in warnings[0]
    assert "| unreadable | 0 |" in captured.out and "10 runs in 4 configurations" in captured.out


def test_best_writes_beside_the_full_report_and_keeps_it(seeded_study, capsys):
    main([str(seeded_study)])
    full = {name: (seeded_study / name).read_bytes() for name in ("report.md", "report.csv", "rt_model_x_method.png")}
    main([str(seeded_study), "--best"])
    assert {name: (seeded_study / name).read_bytes() for name in full} == full
    assert len((seeded_study / "best.md").read_text().splitlines()) == 4  # header, rule, full, lora
    assert (seeded_study / "best_rt_model_x_method.png").is_file()


def test_several_directories_report_to_their_common_parent_or_to_out(tmp_path, capsys):
    study_run(tmp_path / "sweeps" / "a" / "0_lora", "lora", 5e-4, 1, 0.8, 0.8)
    study_run(tmp_path / "sweeps" / "b" / "0_full", "full", 5e-5, 1, 0.85, 0.85)
    main([str(tmp_path / "sweeps" / "a"), str(tmp_path / "sweeps" / "b")])
    runs = list(csv.DictReader((tmp_path / "sweeps" / "runs.csv").open()))
    assert sorted(row["run"] for row in runs) == ["a/0_lora", "b/0_full"]  # paths from the report's folder
    assert not (tmp_path / "sweeps" / "a" / "report.md").exists()
    main([str(tmp_path / "sweeps" / "a"), str(tmp_path / "sweeps" / "b"), "--out", str(tmp_path / "report")])
    assert (tmp_path / "report" / "report.md").is_file()


def test_baseline_compares_every_configuration_with_that_method(seeded_study, capsys):
    main([str(seeded_study), "--baseline", "lora"])
    printed = capsys.readouterr().out
    assert "test_vs_lora" in printed.splitlines()[0] and "compared with lora" in printed
    rows = {(row["method"], row["train.lr"]): row for row in csv.DictReader((seeded_study / "report.csv").open())}
    # lora's validation-best is lr 5e-4 (tests 0.83, 0.85, 0.85); full scored 0.84, 0.85, 0.86
    assert float(rows["full", "5e-05"]["test_vs_lora"]) == pytest.approx(0.0066667, abs=1e-6)
    assert rows["lora", "0.0005"]["test_vs_lora"] == ""
    with pytest.raises(SystemExit) as exit_info:
        main([str(seeded_study), "--baseline", "ia3"])
    assert exit_info.value.code == 2 and "no run of method 'ia3' (methods here: full, lora)" in capsys.readouterr().err


@pytest.fixture
def grid_configs(tmp_path):
    """Two models x two methods, lora at three learning rates close in score: labels that would collide."""
    from finetune.report import collect
    from finetune.studies import configurations, swept_keys

    for model_index, model in enumerate(("bert", "minilm")):
        for index, (method, lr, test) in enumerate((("full", 5e-5, 0.84), ("lora", 1e-4, 0.83), ("lora", 5e-4, 0.832),
                                                    ("lora", 1e-3, 0.834))):
            for seed in (1, 2):
                directory = tmp_path / f"{model}{index}{seed}"
                study_run(directory, method, lr, seed, validation=test + 0.001 * seed, test=test + 0.002 * seed)
                record = json.loads((directory / "results.json").read_text())
                record.update(model=model, label_names=["neg", "pos"])
                record["config"]["model"]["name"] = model
                (directory / "results.json").write_text(json.dumps(record))
    rows, _ = collect([tmp_path])
    return configurations(rows, swept_keys(rows))


def test_the_heat_map_scale_runs_from_chance_to_one_and_names_each_cells_winner(grid_configs):
    from finetune.plots import heat_map_figure

    figure = heat_map_figure(grid_configs)
    norm = figure.axes[0].images[0].norm
    assert (norm.vmin, norm.vmax) == (0.5, 1.0)  # two classes: chance is 0.5
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert any("lr=0.001" in text for text in texts)  # lora's winning setting, by validation
    figure.savefig(io.BytesIO())  # the colour bar's label fits the figure
    bar = figure.axes[1]
    renderer = figure.canvas.get_renderer()
    assert figure.bbox.contains(*bar.yaxis.label.get_window_extent(renderer).p1)


def test_point_labels_name_the_settings_only_and_never_overlap(grid_configs):
    from matplotlib.text import Text

    from finetune.plots import method_colours, quality_figure

    colours = method_colours(["full", "lora"])
    figure = quality_figure(grid_configs, "train_s", "training time", colours)
    figure.canvas.draw()
    labels = [text for text in figure.axes[0].texts]
    assert sorted(text.get_text() for text in labels) == ["lr=0.0001", "lr=0.0001", "lr=0.0005", "lr=0.0005",
                                                        "lr=0.001", "lr=0.001"]  # the marker tells the model
    boxes = [Text.get_window_extent(text) for text in labels]  # the text alone, not the line to its point
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert any(line.get_linestyle() == "--" and set(line.get_ydata()) == {0.5} for line in figure.axes[0].lines)


def test_learning_curves_keep_each_methods_colour_with_a_legend_and_seed_bands(grid_configs):
    from matplotlib.collections import PolyCollection

    from finetune.plots import learning_curves_figure, method_colours

    colours = method_colours(["full", "lora"])
    figure = learning_curves_figure(grid_configs, colours)
    loss_axes, metric_axes = figure.axes
    assert len(figure.legends[0].get_texts()) == len(grid_configs) + 1  # every configuration, and chance
    for axes in (loss_axes, metric_axes):
        assert sum(isinstance(c, PolyCollection) for c in axes.collections) == len(grid_configs)  # two seeds each
        assert {line.get_color() for line in axes.lines if line.get_label().endswith("full lr=5e-05")}\
            == {colours["full"]}


def test_a_results_file_of_the_wrong_shape_is_an_unreadable_row_and_out_must_be_a_folder(seeded_study, tmp_path, capsys):
    (seeded_study / "98_list").mkdir()
    (seeded_study / "98_list" / "results.json").write_text("[1, 2, 3]")
    main([str(seeded_study)])
    captured = capsys.readouterr()
    assert "98_list/results.json: cannot be read (ValueError: not a finetune record" in captured.err
    assert "| unreadable |" in captured.out
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        main([str(seeded_study), "--out", str(blocker)])
    assert f"--out: '{blocker}' is a file, not a directory" in capsys.readouterr().err
