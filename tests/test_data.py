"""Loading local files, column mapping, label mapping and validation carving."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from finetune.data import find_split_file
from finetune.errors import UserError
from finetune.schema import DatasetSpec

from conftest import load_data, sentiment_rows, write_jsonl


def spec(path, **overrides) -> DatasetSpec:
    return DatasetSpec(name="local", path=str(path), **overrides)


def test_jsonl_splits_load_with_ids_and_label_names(sentiment_dir):
    data = load_data(spec(sentiment_dir, label_names=["neg", "pos"]), seed=0)
    assert {role: len(ds) for role, ds in data.splits.items()} == {"train": 160, "validation": 48, "test": 48}
    assert data.label_names == ("neg", "pos")
    assert data.splits["train"].column_names == ["text", "labels"]
    assert set(data.splits["test"]["labels"]) == {0, 1}


def test_csv_and_parquet_with_other_column_names_and_string_labels(tmp_path):
    rows = [{"review": r["text"], "stars": "pos" if r["label"] else "neg"} for r in sentiment_rows(40, 0)]
    pd.DataFrame(rows[:30]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[30:]).to_parquet(tmp_path / "test.parquet")
    data = load_data(spec(tmp_path, text_column="review", label_column="stars"), seed=0)
    assert data.label_names == ("neg", "pos")
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 30
    expected = [1 if row["stars"] == "pos" else 0 for row in rows[30:]]
    assert data.splits["test"]["labels"] == expected


def test_gzipped_jsonl_is_found_and_read(tmp_path):
    with gzip.open(tmp_path / "train.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in sentiment_rows(20, 0))
    assert find_split_file(tmp_path, "train") == tmp_path / "train.jsonl.gz"
    assert len(load_data(spec(tmp_path), seed=0).splits["train"]) == 18  # 2 carved for validation


def test_rating_labels_1_to_4_map_to_ids_in_numeric_order(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": [10, 2, 3, 4][i % 4]} for i in range(40)])
    data = load_data(spec(tmp_path), seed=0)
    assert data.label_names == ("2", "3", "4", "10")


def test_validation_is_carved_from_train_with_the_seed(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", sentiment_rows(100, 0))
    first = load_data(spec(tmp_path, validation_fraction=0.2), seed=7)
    again = load_data(spec(tmp_path, validation_fraction=0.2), seed=7)
    other = load_data(spec(tmp_path, validation_fraction=0.2), seed=8)
    assert len(first.splits["validation"]) == 20 and len(first.splits["train"]) == 80
    assert first.splits["validation"]["text"] == again.splits["validation"]["text"]
    assert first.splits["validation"]["text"] != other.splits["validation"]["text"]
    assert "test" not in first.splits


def test_max_samples_take_a_shuffled_subset(sentiment_dir):
    data = load_data(spec(sentiment_dir, max_train_samples=20, max_eval_samples=10), seed=0)
    assert len(data.splits["train"]) == 20 and len(data.splits["test"]) == 10
    assert set(data.splits["train"]["labels"]) == {0, 1}


def test_bundled_rotten_tomatoes_loads_offline(compose_plan):
    data = load_data(compose_plan().run.dataset, seed=0)
    assert {role: len(ds) for role, ds in data.splits.items()} == {"train": 8530, "validation": 1066, "test": 1066}
    assert data.label_names == ("neg", "pos")


@pytest.mark.parametrize(
    "rows,options,message",
    [
        ([{"text": "a", "label": 0}, {"text": "b", "label": 1}], {"text_column": "review"},
         "dataset.text_column: no column 'review' in {dir}/train.jsonl (columns: text, label)"),
        ([{"text": "a", "y": 0}], {}, "dataset.label_column: no column 'label'"),
        ([{"text": 5, "label": 0}, {"text": "b", "label": 1}], {}, "dataset.text_column: {dir}/train.jsonl, row 1 has 5 (int), not a string"),
        ([{"text": "a", "label": 0}, {"text": "b", "label": 0}], {}, "need at least 2"),
        ([{"text": "a", "label": 0}, {"text": "b", "label": 3}], {"label_names": ["neg", "pos"]}, "dataset.label_names: 2 names"),
    ],
)
def test_bad_columns_and_labels_name_the_key(tmp_path, rows, options, message):
    write_jsonl(tmp_path / "train.jsonl", rows * 5)
    with pytest.raises(UserError) as caught:
        load_data(spec(tmp_path, **options), seed=0)
    assert message.format(dir=tmp_path) in str(caught.value)


def test_labels_outside_the_training_label_set_are_refused(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20, 0))
    write_jsonl(tmp_path / "test.jsonl", [{"text": "x", "label": 7}])
    with pytest.raises(UserError, match="split 'test' has label 7 outside the label set"):
        load_data(spec(tmp_path), seed=0)


def test_hub_data_sets_are_renamed_and_hub_failures_are_one_line(monkeypatch):
    from datasets import Dataset, DatasetDict

    rows = sentiment_rows(20, 0)
    hub_copy = DatasetDict(
        train=Dataset.from_list([{"sentence": r["text"], "label": r["label"]} for r in rows]),
        validation=Dataset.from_list([{"sentence": r["text"], "label": r["label"]} for r in rows[:6]]),
    )
    monkeypatch.setattr("datasets.load_dataset", lambda hub_id, config: hub_copy)
    sst2 = DatasetSpec(name="sst2", hub_id="glue", hub_config="sst2", hub_renames={"sentence": "text"},
                       validation_split=None, test_split="validation")
    data = load_data(sst2, seed=0)
    assert len(data.splits["test"]) == 6 and len(data.splits["validation"]) == 2

    def offline(*args):
        raise ConnectionError("Couldn't reach 'glue' on the Hub")

    monkeypatch.setattr("datasets.load_dataset", offline)
    with pytest.raises(UserError, match="dataset.hub_id: could not load 'glue' from the Hugging Face Hub"):
        load_data(sst2, seed=0)


def test_malformed_jsonl_names_the_file_and_line(tmp_path):
    lines = [json.dumps(row) for row in sentiment_rows(10, 0)]
    lines[6] = '{"text": "unterminated, "label": 1}'
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"train.jsonl: line 7 is not valid JSON"):
        load_data(spec(tmp_path), seed=0)


def test_missing_train_file_and_empty_file(tmp_path):
    with pytest.raises(UserError, match="no train.jsonl"):
        load_data(spec(tmp_path), seed=0)
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(UserError, match="train.jsonl: the file is empty"):
        load_data(spec(tmp_path), seed=0)


def labelled_rows(labels: list) -> list[dict]:
    return [{"text": f"text {index}", "label": label} for index, label in enumerate(labels)]


@pytest.mark.parametrize(
    "labels,options,message",
    [
        ([0, 1] * 5 + [None], {}, "dataset.label_column: {dir}/train.jsonl, row 11 has no label; give every row one"),
        ([0, 1] * 5 + ["positive"] + [0, 1], {}, "dataset.label_column: {dir}/train.jsonl, row 11 has the label "
                                                   "'positive' (a string) where the other rows have number labels"),
        ([0, 1] * 5, {"label_names": ["a", "b", "c"]}, "dataset.label_names: 3 names given, but the train split has "
                                                        "no label 'c' (2)"),
    ],
)
def test_labels_that_would_train_the_wrong_classes_are_refused_naming_file_and_row(tmp_path, labels, options, message):
    write_jsonl(tmp_path / "train.jsonl", labelled_rows(labels))
    with pytest.raises(UserError) as caught:
        load_data(spec(tmp_path, **options), seed=0)
    assert message.format(dir=tmp_path) in str(caught.value)


def test_a_row_without_a_label_is_named_in_its_own_file_not_where_validation_was_carved_to(tmp_path):
    rows = labelled_rows([0, 1] * 50)
    rows[37]["label"] = None
    write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(UserError, match=r"train.jsonl, row 38 has no label"):
        load_data(spec(tmp_path, validation_fraction=0.5), seed=0)


def test_empty_texts_and_limits_beyond_the_data_are_said_not_refused(tmp_path, caplog):
    rows = labelled_rows([0, 1] * 10)
    rows[3]["text"], rows[8]["text"] = "", "   "
    write_jsonl(tmp_path / "train.jsonl", rows)
    data = load_data(spec(tmp_path, max_train_samples=1000), seed=0)
    assert len(data.splits["train"]) == 18
    assert f"2 empty text(s) in {tmp_path}/train.jsonl (rows 4, 9)" in caplog.text
    assert "dataset.max_train_samples=1000 is more than the 18 rows of train; all of them are used" in caplog.text


def test_validation_and_test_subsets_draw_different_rows(tmp_path):
    # both files sorted by label and of equal length: the same draw would give both the same class balance
    for split in ("validation", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", labelled_rows([0] * 50 + [1] * 50))
    write_jsonl(tmp_path / "train.jsonl", labelled_rows([0, 1] * 20))
    data = load_data(spec(tmp_path, max_eval_samples=20), seed=3)
    assert data.splits["validation"]["text"] != data.splits["test"]["text"]


def test_csv_problems_say_what_is_wrong(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\n")
    with pytest.raises(UserError, match=r"train.csv: no rows \(a header at most\)"):
        load_data(spec(tmp_path), seed=0)
    (tmp_path / "train.csv").write_text("text;label\n" + "".join(f"t{i};{i % 2}\n" for i in range(20)))
    with pytest.raises(UserError, match=r"it looks separated by ';': set dataset.delimiter=';'"):
        load_data(spec(tmp_path), seed=0)
    assert load_data(spec(tmp_path, delimiter=";"), seed=0).label_names == ("0", "1")


def test_a_gz_file_that_is_not_gzip_is_one_line(tmp_path):
    write_jsonl(tmp_path / "train.jsonl.gz", sentiment_rows(10, 0))  # plain text under a .gz name
    with pytest.raises(UserError, match=r"train.jsonl.gz: not a gzip file; compress it with gzip, or drop the .gz"):
        load_data(spec(tmp_path), seed=0)


def test_a_split_named_by_a_typo_is_refused_not_dropped_or_carved(sentiment_dir):
    with pytest.raises(UserError, match=r"^dataset.test_split: no 'tst' split in .* \(found: test, train, validation\)|"
                                        r"^dataset.test_split: no 'tst' split"):
        load_data(spec(sentiment_dir, test_split="tst"), seed=0)
    with pytest.raises(UserError, match=r"^dataset.validation_split: no 'vall' split"):
        load_data(spec(sentiment_dir, validation_split="vall"), seed=0)


def test_split_files_that_are_not_files_or_come_twice_are_named(tmp_path):
    (tmp_path / "train.jsonl").mkdir()
    with pytest.raises(UserError, match=r"train.jsonl is a directory, not a data file"):
        load_data(spec(tmp_path), seed=0)
    (tmp_path / "train.jsonl").rmdir()
    (tmp_path / "train.jsonl").symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(UserError, match=r"train.jsonl is a broken or looping symbolic link"):
        load_data(spec(tmp_path), seed=0)
    (tmp_path / "train.jsonl").unlink()
    write_jsonl(tmp_path / "train.jsonl", sentiment_rows(10, 0))
    pd.DataFrame(sentiment_rows(10, 1)).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(UserError, match=r"dataset.path: train.jsonl, train.csv all hold split 'train'; keep one"):
        load_data(spec(tmp_path), seed=0)


def test_csv_columns_named_twice_are_refused_and_numeric_texts_stay_texts(tmp_path):
    (tmp_path / "train.csv").write_text("text,label,label\n" + "".join(f"t{i},{i % 2},{1 - i % 2}\n" for i in range(10)))
    with pytest.raises(UserError, match=r"train.csv: the header names 'label' twice"):
        load_data(spec(tmp_path), seed=0)
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    assert load_data(spec(tmp_path), seed=0).splits["train"]["text"][0].isdigit()  # '3', not 3


def test_a_json_object_of_columns_is_named_and_long_values_are_cut(tmp_path):
    rows = sentiment_rows(40, 0)
    (tmp_path / "train.json").write_text(json.dumps({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}))
    with pytest.raises(UserError) as caught:
        load_data(spec(tmp_path), seed=0)
    message = str(caught.value)
    assert "a .json file must be a list of records (or use JSON lines), not an object of columns" in message
    assert len(message) < 400


def test_a_label_name_given_twice_is_refused(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", labelled_rows([0, 1] * 5))
    with pytest.raises(UserError, match=r"^dataset.label_names: 'pos' named twice"):
        load_data(spec(tmp_path, label_names=["pos", "pos"]), seed=0)
