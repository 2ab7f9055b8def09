"""Using trained runs: finetune-predict, finetune-export with and without --merge, and
transformers.pipeline on the export giving the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import pipeline

from finetune.export import export
from finetune.export import main as export_main
from finetune.predict import main as predict_main
from finetune.predict import predict
from finetune.runner import execute
from finetune.trained import load_run

from conftest import EMOTION_WORDS, compose

TEXTS = ["a wonderful and moving film", "dull boring plot", "the acting was superb", "bland"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model, sentiment_dir):
    def make(*overrides: str) -> Path:
        output_dir = tmp_path_factory.mktemp("run")
        execute(compose("hardware=cpu", "train.batch_size=16", "model.max_length=32", *overrides, output_dir=output_dir))
        return output_dir

    return make


@pytest.fixture(scope="module")
def sentiment_lora(lora_run, tiny_model, sentiment_dir) -> Path:
    return lora_run("model=bert", f"model.path={tiny_model('bert')}", "method=lora", "dataset=local",
                    f"dataset.path={sentiment_dir}", "dataset.label_names=[negative,positive]", "train.epochs=2")


def test_predict_gives_labels_and_probabilities_in_input_order(sentiment_lora, capsys, tmp_path):
    outputs = predict(load_run(sentiment_lora), TEXTS, batch_size=3)
    assert [output["text"] for output in outputs] == TEXTS
    for output in outputs:
        probabilities = output["probabilities"]
        assert set(probabilities) == {"negative", "positive"} and sum(probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert output["label"] == max(probabilities, key=probabilities.get)

    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS[2:]))
    predict_main([str(sentiment_lora), *TEXTS[:2], "--file", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == json.loads(json.dumps(outputs))


def test_predict_reads_a_named_csv_column_and_prints_no_load_report(sentiment_lora, capsys, tmp_path):
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text("id,review\n" + "".join(f'{index},"{text}"\n' for index, text in enumerate(TEXTS)))

    with pytest.raises(SystemExit) as refused:
        predict_main([str(sentiment_lora), "--file", str(csv_file)])
    assert refused.value.code == 2
    assert "has no column 'text' (columns: id, review); name one with --text-column" in capsys.readouterr().err

    predict_main([str(sentiment_lora), "--file", str(csv_file), "--text-column", "review"])
    captured = capsys.readouterr()
    assert [json.loads(line)["text"] for line in captured.out.splitlines()] == TEXTS
    # the adapter's base loads without its trained head, which the adapter then brings: no MISSING report
    assert "MISSING" not in captured.out + captured.err


@pytest.mark.parametrize("merge", [False, True])
def test_exported_model_in_a_pipeline_predicts_what_finetune_predict_does(sentiment_lora, tmp_path, merge):
    trained = load_run(sentiment_lora)
    expected = predict(trained, TEXTS)
    out = export(trained, tmp_path / "export", merge=merge)

    assert (out / "adapter_config.json").exists() != merge
    assert "bert + lora on local" in (out / "README.md").read_text()
    classify = pipeline("text-classification", model=str(out), top_k=None, device="cpu")
    for text, mine in zip(TEXTS, expected):
        theirs = {item["label"]: item["score"] for item in classify([text])[0]}
        assert theirs == pytest.approx(mine["probabilities"], abs=1e-5)


@pytest.mark.parametrize("method", ["dora", "adalora"])
def test_other_mergeable_adapters_export_merged_and_predict_the_same(lora_run, tiny_model, sentiment_dir, tmp_path,
                                                                    method):
    run_dir = lora_run("model=bert", f"model.path={tiny_model('bert')}", f"method={method}", "dataset=local",
                       f"dataset.path={sentiment_dir}", "train.lr=2e-3", "train.epochs=2")
    trained = load_run(run_dir)
    expected = predict(trained, TEXTS)
    out = export(trained, tmp_path / "export", merge=True)
    assert not (out / "adapter_config.json").exists()
    classify = pipeline("text-classification", model=str(out), top_k=None, device="cpu")
    for text, mine in zip(TEXTS, expected):
        theirs = {item["label"]: item["score"] for item in classify([text])[0]}
        assert theirs == pytest.approx(mine["probabilities"], abs=1e-5)


def test_multilabel_predictions_use_the_runs_threshold_and_export_to_a_sigmoid_pipeline(lora_run, tiny_model, emotion_dir,
                                                                                       tmp_path):
    run_dir = lora_run("model=bert", f"model.path={tiny_model('bert')}", "method=full", "dataset=local",
                       f"dataset.path={emotion_dir}", "dataset.task=multilabel", "dataset.label_column=labels",
                       f"dataset.label_names=[{','.join(EMOTION_WORDS)}]", "dataset.tune_threshold=true",
                       "train.lr=3e-3", "train.epochs=2")
    trained = load_run(run_dir)
    threshold = trained.results.metrics["validation"]["threshold"]
    outputs = predict(trained, ["happy and scared", "furious"])
    for output in outputs:
        assert output["labels"] == [name for name, p in output["probabilities"].items() if p > threshold]
    classify = pipeline("text-classification", model=str(export(trained, tmp_path / "export", merge=False)), top_k=None)
    theirs = {item["label"]: item["score"] for item in classify(["furious"])[0]}
    assert theirs == pytest.approx(outputs[1]["probabilities"], abs=1e-5)


@pytest.mark.parametrize("merge", [False, True])
def test_exported_seq2seq_generates_the_summaries_finetune_predict_gives(lora_run, tiny_model, article_dir, tmp_path,
                                                                        merge):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    run_dir = lora_run("model=flan_t5", f"model.path={tiny_model('flan_t5')}", "method=lora", "dataset=cnn_dailymail",
                       f"dataset.path={article_dir}", "dataset.max_source_length=32", "generation.max_new_tokens=8",
                       "train.max_steps=2", "train.batch_size=8")
    trained = load_run(run_dir)
    articles = ["good great film. the plot is fun and the acting superb.", "bad awful boring. a weak story."]
    summaries = [output["summary"] for output in predict(trained, articles)]
    out = export(trained, tmp_path / "export", merge=merge)
    # plain transformers, as the model card says: prefix and generation settings travel with the model
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModelForSeq2SeqLM.from_pretrained(out)
    assert model.config.prefix == "summarize: " and model.generation_config.max_new_tokens == 8
    for article, summary in zip(articles, summaries):
        ids = model.generate(**tokenizer([model.config.prefix + article], truncation=True, max_length=32, return_tensors="pt"))
        assert tokenizer.decode(ids[0], skip_special_tokens=True).strip() == summary


def test_causal_summaries_come_from_predict_and_soft_prompts_do_not_merge(lora_run, tiny_model, article_dir, tmp_path):
    from finetune.errors import UserError

    run_dir = lora_run("model=gpt_neo", f"model.path={tiny_model('gpt_neo')}", "method=prompt_tuning",
                       "dataset=cnn_dailymail", f"dataset.path={article_dir}", "dataset.max_source_length=32",
                       "dataset.max_target_length=16", "generation.max_new_tokens=6", "train.max_steps=1", "train.batch_size=8")
    trained = load_run(run_dir)
    outputs = predict(trained, ["a short article.", "a somewhat longer article about a film."])
    assert all(isinstance(output["summary"], str) for output in outputs)
    with pytest.raises(UserError, match="^--merge: only adalora, ia3, lora adapters \(and their variants\) and the peft types that peft "
                                  "merges merge into the base weights; this run is prompt_tuning"):
        export(trained, tmp_path / "merged", merge=True)


def test_missing_or_incomplete_runs_and_a_used_out_dir_are_one_line_errors(tmp_path, capsys, sentiment_lora):
    with pytest.raises(SystemExit) as missing:
        predict_main([str(tmp_path / "nope"), "text"])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "results.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(SystemExit) as running:
        export_main([str(tmp_path / "half"), str(tmp_path / "out")])
    errors = capsys.readouterr().err
    assert missing.value.code == running.value.code == 2
    assert "no results.json; is this the directory of a finetune run?" in errors
    assert "the run is 'running', not completed; run the same command again to finish it" in errors
    export_main([str(sentiment_lora), str(tmp_path / "lora-out")])
    with pytest.raises(SystemExit) as again:
        export_main([str(sentiment_lora), str(tmp_path / "lora-out")])
    assert again.value.code == 2 and "exists and is not empty" in capsys.readouterr().err


def test_eval_scores_the_trained_model_on_other_data_and_writes_it_next_to_the_run(sentiment_lora, sentiment_dir,
                                                                                     tmp_path, capsys):
    from conftest import sentiment_rows, write_splits

    from finetune.evaluate_run import main as eval_main

    data = {"dataset=local", f"dataset.path={sentiment_dir}", "dataset.label_names=[negative,positive]"}
    eval_main([str(sentiment_lora), *sorted(data)])
    same = json.loads((sentiment_lora / "eval" / "local.json").read_text())
    results = json.loads((sentiment_lora / "results.json").read_text())
    assert same["metrics"]["test"]["accuracy"] == results["metrics"]["test"]["accuracy"]
    assert same["metrics"]["test"]["loss"] == pytest.approx(results["metrics"]["test"]["loss"], abs=1e-5)

    other = write_splits(tmp_path / "other", lambda count, seed: sentiment_rows(count, seed + 10), (20, 20, 30))
    eval_main([str(sentiment_lora), "dataset=local", f"dataset.path={other}", "dataset.label_names=[negative,positive]"])
    assert "test        accuracy" in capsys.readouterr().out
    assert json.loads((sentiment_lora / "eval" / "local.json").read_text())["overrides"][1] == f"dataset.path={other}"

    with pytest.raises(SystemExit) as refused:
        eval_main([str(sentiment_lora), "dataset=local", f"dataset.path={other}", "dataset.label_names=[a,b]"])
    assert refused.value.code == 2
    assert "the run was trained for classification with labels ['negative', 'positive']" in capsys.readouterr().err


def test_every_command_that_takes_a_run_dir_takes_a_sweep_jobs_dir(sentiment_lora, sentiment_dir, tmp_path, capsys):
    import shutil

    from finetune.evaluate_run import main as eval_main

    job = tmp_path / "003_bert_lora_local_lr=0.01,seed=1"  # as finetune names a sweep's job
    shutil.copytree(sentiment_lora, job)
    eval_main([str(job), "dataset=local", f"dataset.path={sentiment_dir}", "dataset.label_names=[negative,positive]"])
    assert (job / "eval" / "local.json").is_file()
    predict_main([str(job), "a wonderful film"])
    assert '"label": ' in capsys.readouterr().out
    export_main([str(job), str(tmp_path / "exported")])
    assert (tmp_path / "exported" / "README.md").is_file()


def test_the_model_card_names_no_local_path(sentiment_lora, tmp_path):
    card = export(load_run(sentiment_lora), tmp_path / "out", merge=False) / "README.md"
    text = card.read_text()
    assert str(tmp_path.parent) not in text and "site-packages" not in text and "/tmp/" not in text
    assert "- data: local (local files)" in text and '"path": "(a local folder)"' in text


def test_an_out_dir_that_cannot_be_written_is_one_line(sentiment_lora, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as refused:
        export_main([str(sentiment_lora), str(blocker / "out")])
    error = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and len(error.splitlines()) == 1
    assert error.startswith(f"finetune-export: error: OUT_DIR: cannot write '{blocker / 'out'}'")


def test_a_run_that_failed_says_so_instead_of_asking_to_run_it_again(tmp_path, capsys):
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "results.json").write_text(json.dumps(
        {"status": "failed", "error": "dataset.label_column: train.jsonl, row 3 has no label"}))
    with pytest.raises(SystemExit):
        predict_main([str(tmp_path / "failed"), "text"])
    assert ("the run failed (dataset.label_column: train.jsonl, row 3 has no label), so it has no trained model; "
            "fix what the error names") in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    ("[1, 2, 3]", "not a finetune record (a JSON list, expected an object)"),
    ("{}", "not a finetune record (no status)"),
    ('{"status": "completed", "metrics": "oops"}', "not a finetune record (its metrics is a str)"),
])
def test_a_results_file_that_is_not_a_record_is_one_line(tmp_path, capsys, content, message):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(content)
    with pytest.raises(SystemExit) as refused:
        predict_main([str(tmp_path / "run"), "text"])
    assert refused.value.code == 2 and message in capsys.readouterr().err


def test_a_completed_run_without_its_model_says_how_to_train_it_again(sentiment_lora, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sentiment_lora, run)
    shutil.rmtree(run / "model")
    with pytest.raises(SystemExit):
        export_main([str(run), str(tmp_path / "out")])
    assert f"results.json says completed, but {run / 'model'} holds no model; run its command with restart=true" \
        in capsys.readouterr().err


def test_predict_options_are_checked_and_may_follow_the_texts(sentiment_lora, tmp_path, capsys):
    with pytest.raises(SystemExit):
        predict_main([str(sentiment_lora), "a film", "--batch-size", "0"])
    assert "--batch-size: must be > 0, got 0" in capsys.readouterr().err
    predict_main([str(sentiment_lora), "--batch-size", "2", "a film", "a dull film"])
    assert capsys.readouterr().out.count('"label"') == 2
    for bad, message in ((tmp_path, f"--output: cannot write '{tmp_path}'"),
                         (tmp_path / "no" / "dir" / "p.jsonl", "--output: cannot write")):
        with pytest.raises(SystemExit):
            predict_main([str(sentiment_lora), "a film", "--output", str(bad)])
        assert message in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SystemExit):
        predict_main([str(sentiment_lora), "--file", str(tmp_path / "empty.jsonl")])
    assert f"--file: '{tmp_path / 'empty.jsonl'}' has no rows" in capsys.readouterr().err


def test_eval_never_scores_on_rows_carved_from_train(sentiment_lora, tmp_path, capsys):
    from conftest import sentiment_rows, write_jsonl
    from finetune.evaluate_run import main as eval_main

    write_jsonl(tmp_path / "only_train" / "train.jsonl", sentiment_rows(20, 5))
    with pytest.raises(SystemExit) as refused:
        eval_main([str(sentiment_lora), "dataset=local", f"dataset.path={tmp_path / 'only_train'}",
                   "dataset.label_names=[negative,positive]"])
    assert refused.value.code == 2 and "has no validation or test split to score" in capsys.readouterr().err
