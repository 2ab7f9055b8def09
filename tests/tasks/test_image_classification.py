"""Image classification with CLIP: a tiny random CLIP (real tokenizer and image processor) on
scikit-learn's 8x8 digits, upsampled to RGB and written as an image folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, pipeline

from conftest import NETWORK_METHODS, SimulatedCrash, compose, crash_after_checkpoint
from finetune.errors import UserError
from finetune.export import export
from finetune.predict import main as predict_main
from finetune.predict import predict
from finetune.runner import execute
from finetune.trained import load_run

DIGIT_PROMPT = "dataset.prompt_template='a photo of the digit {label}'"
SPLIT_SIZES = {"train": 400, "validation": 100, "test": 100}


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """digits/{train,validation,test}/<digit>/<index>.png: 32x32 RGB, shuffled into 400/100/100 images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    root = tmp_path_factory.mktemp("digits")
    start = 0
    for split, size in SPLIT_SIZES.items():
        for index in order[start:start + size]:
            pixels = (digits.images[index] / 16 * 255).astype(np.uint8)
            folder = root / split / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).resize((32, 32), Image.NEAREST).convert("RGB").save(folder / f"{index}.png")
        start += size
    return root


@pytest.fixture
def clip_run(compose_plan, tiny_model, digits_dir) -> Callable:
    """A Run of the tiny CLIP on the digits; extra overrides come last and win."""

    def make(*overrides: str, output_dir: Path | None = None):
        return compose_plan("model=clip", f"model.path={tiny_model('clip')}", "dataset=local", f"dataset.path={digits_dir}",
                           "dataset.task=image_classification", DIGIT_PROMPT, "hardware=cpu", "train.batch_size=8",
                           *overrides, output_dir=output_dir)

    return make


@pytest.fixture(scope="module")
def trained_full(tmp_path_factory, tiny_model, digits_dir) -> Path:
    """Full fine-tuning of the tiny CLIP for 4 epochs: it learns the digits."""
    return _train(tmp_path_factory, tiny_model, digits_dir, "method=full", "train.lr=3e-4", "train.epochs=4",
                  "train.early_stopping_patience=null")


@pytest.fixture(scope="module")
def trained_lora(tmp_path_factory, tiny_model, digits_dir) -> Path:
    return _train(tmp_path_factory, tiny_model, digits_dir, "method=lora", "train.lr=3e-3", "train.epochs=1")


def _train(tmp_path_factory, tiny_model, digits_dir, *overrides: str) -> Path:
    output_dir = tmp_path_factory.mktemp("clip-run")
    execute(compose("model=clip", f"model.path={tiny_model('clip')}", "dataset=local", f"dataset.path={digits_dir}",
                    "dataset.task=image_classification", DIGIT_PROMPT, "hardware=cpu", "train.batch_size=8", *overrides,
                    output_dir=output_dir))
    return output_dir


def _test_images(digits_dir: Path, count: int) -> list[str]:
    return [str(path) for path in sorted((digits_dir / "test").rglob("*.png"))[:count]]


def test_full_fine_tuning_learns_the_digits_well_above_chance(trained_full):
    results = json.loads((trained_full / "results.json").read_text())
    assert results["status"] == "completed"
    test = results["metrics"]["test"]
    assert {"accuracy", "macro_precision", "macro_recall", "macro_f1", "loss"} <= set(test)
    assert test["accuracy"] > 0.3, test  # 10 classes: chance is 0.1
    assert results["label_names"] == [str(digit) for digit in range(10)]
    config = json.loads((trained_full / "model" / "config.json").read_text())
    assert len(config["class_prompt_ids"]) == 10 and config["id2label"]["3"] == "3"
    processor = AutoImageProcessor.from_pretrained(trained_full / "model")  # saved with the model: CLIP's own
    assert processor.crop_size == {"height": 224, "width": 224}


def test_predict_takes_image_paths_and_agrees_with_the_test_split(trained_full, digits_dir, tmp_path, capsys):
    images = _test_images(digits_dir, 12)
    outputs = predict(load_run(trained_full), images, batch_size=5)
    assert [output["image"] for output in outputs] == images
    for output in outputs:
        assert output["label"] == max(output["probabilities"], key=output["probabilities"].get)
        assert sum(output["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    (tmp_path / "images.txt").write_text("\n".join(images) + "\n")
    predict_main([str(trained_full), "--file", str(tmp_path / "images.txt")])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["label"] for row in printed] == [row["label"] for row in outputs]


def test_eval_scores_an_image_run_on_another_split(trained_full, tiny_model, digits_dir):
    from finetune.evaluate_run import main as evaluate_main

    # the fixture's run recorded no command line, so the data set is named again
    evaluate_main([str(trained_full), "model=clip", f"model.path={tiny_model('clip')}", "dataset=local",
                   f"dataset.path={digits_dir}", "dataset.task=image_classification", DIGIT_PROMPT,
                   "dataset.test_split=validation"])
    written = json.loads((trained_full / "eval" / "local.json").read_text())
    recorded = json.loads((trained_full / "results.json").read_text())["metrics"]["validation"]
    assert written["metrics"]["validation"]["accuracy"] == pytest.approx(recorded["accuracy"])


@pytest.mark.parametrize("merge", [False, True])
def test_an_exported_run_classifies_images_through_the_zero_shot_pipeline(trained_lora, digits_dir, tmp_path, merge):
    from PIL import Image

    trained = load_run(trained_lora)
    images = _test_images(digits_dir, 6)
    expected = predict(trained, images)
    out = export(trained, tmp_path / "export", merge=merge)
    card = (out / "README.md").read_text()
    assert "pipeline_tag: zero-shot-image-classification" in card
    assert "candidate_labels=['0', '1', '2'," in card and "hypothesis_template='a photo of the digit {}'" in card

    classify = pipeline("zero-shot-image-classification", model=str(out), device="cpu")
    labels = [str(digit) for digit in range(10)]
    for path, mine in zip(images, expected):
        scores = classify(Image.open(path), candidate_labels=labels, hypothesis_template="a photo of the digit {}")
        assert {item["label"]: item["score"] for item in scores} == pytest.approx(mine["probabilities"], abs=1e-4)


def test_lora_adapts_both_towers_and_the_text_side_is_recomputed_each_step(clip_run):
    from finetune.models import load_model, load_tokenizer

    plan = clip_run("method=lora")
    tokenizer = load_tokenizer(plan.run.model.path, plan.run.model)
    task = plan.kind.build(plan.run, tokenizer, tuple(str(digit) for digit in range(10)))
    model = load_model(task.model_class, plan.run.model.path, plan.run.model, task.model_kwargs(), tokenizer.pad_token_id)
    lora = plan.method.prepare(model, plan.run.model, task, total_steps=10)
    trained = {name for name, parameter in lora.named_parameters() if parameter.requires_grad}
    assert any("text_model" in name for name in trained) and any("vision_model" in name for name in trained)
    assert all("lora_" in name for name in trained)

    base = lora.get_base_model()
    lora.train()
    assert base.class_features().requires_grad  # the text tower trains: its features come with gradients
    lora.eval()
    first = base.class_features()
    assert base.class_features() is first and not first.requires_grad  # once per evaluation


def test_frozen_text_side_is_encoded_once_per_mode_switch(clip_run):
    from finetune.models import load_model, load_tokenizer

    plan = clip_run("method=head_only")
    tokenizer = load_tokenizer(plan.run.model.path, plan.run.model)
    task = plan.kind.build(plan.run, tokenizer, ("0", "1", "2"))
    model = load_model(task.model_class, plan.run.model.path, plan.run.model, task.model_kwargs(), tokenizer.pad_token_id)
    model = plan.method.prepare(model, plan.run.model, task, total_steps=10).train()
    first = model.class_features()
    assert first.shape[0] == 3 and model.class_features() is first and not first.requires_grad
    pixels = torch.zeros(2, 3, 224, 224)
    loss = model(pixel_values=pixels, labels=torch.tensor([0, 2])).loss
    loss.backward()
    assert model.visual_projection.weight.grad is not None
    assert model.text_projection.weight.grad is None


@pytest.mark.parametrize("method", sorted({*NETWORK_METHODS, "svm_embeddings"}))
def test_every_method_runs_on_clip_or_is_refused_in_one_line(clip_run, method):
    from finetune.schema import Run

    overrides = (f"method={method}", "dataset.max_train_samples=80", "dataset.max_eval_samples=16", "train.max_steps=2",
                 "hardware.loader_workers=0")
    try:
        plan: Run = clip_run(*overrides)
    except UserError as refusal:
        assert method in ("prompt_tuning", "prefix_tuning")
        assert str(refusal).startswith(f"method: {method} does not apply to model=clip: ")
        return
    results = execute(plan)
    assert results.status == "completed" and set(results.metrics) == {"validation", "test"}
    assert 0 <= results.metrics["test"]["accuracy"] <= 1
    trainable, total = results.params["trainable"], results.params["total"]
    if method == "none":
        assert trainable == 0
    elif method != "full":
        assert 0 < trainable < total


def test_zero_shot_is_the_untrained_model_and_the_svm_reuses_its_image_embeddings(clip_run, tmp_path, caplog):
    zero_shot = execute(clip_run("method=none", "dataset.max_eval_samples=30", output_dir=tmp_path / "none"))
    assert zero_shot.params["trainable"] == 0 and zero_shot.train_seconds == 0

    first = execute(clip_run("method=svm_embeddings", "dataset.max_train_samples=60", "dataset.max_eval_samples=30",
                             output_dir=tmp_path / "svm"))
    with caplog.at_level("INFO", logger="finetune.embeddings"):
        again = execute(clip_run("method=svm_embeddings", "dataset.max_train_samples=60", "dataset.max_eval_samples=30",
                                 "method.C=0.5", output_dir=tmp_path / "svm-again"))
    assert "Embeddings of train: reused" in caplog.text
    assert first.params["trainable"] == 10 * 32 + 10  # one SVM per digit on 32-wide embeddings
    assert again.metrics["test"].keys() == first.metrics["test"].keys()


def test_a_table_of_image_paths_relative_to_its_folder_loads(clip_run, digits_dir, tmp_path):
    rows = [{"file": str(path.relative_to(digits_dir)), "digit": path.parent.name}
            for path in sorted((digits_dir / "train").rglob("*.png"))[::10]]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for path in {digits_dir / row["file"] for row in rows}:
        (tmp_path / path.relative_to(digits_dir)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.relative_to(digits_dir)).write_bytes(path.read_bytes())
    plan = clip_run(f"dataset.path={tmp_path}", "dataset.image_column=file", "dataset.label_column=digit",
                   "method=none", "dataset.test_split=null", output_dir=tmp_path / "run")
    results = execute(plan)
    assert results.status == "completed" and sorted(results.label_names) == sorted({row["digit"] for row in rows})


def test_text_tasks_refuse_clip_and_images_refuse_text_models(clip_run, tiny_plan):
    with pytest.raises(UserError, match="^dataset.task: classification takes texts; model=clip classifies images"):
        clip_run("dataset.task=classification")
    with pytest.raises(UserError, match="^dataset.task: image_classification needs a vision-language model; model=bert"):
        tiny_plan("dataset.task=image_classification")
    with pytest.raises(UserError, match="^dataset.prompt_template: 'a digit' has no \\{label\\}"):
        clip_run("dataset.prompt_template='a digit'")
    with pytest.raises(UserError, match="^method: svm_tfidf counts words; dataset.task=image_classification has no texts"):
        clip_run("method=svm_tfidf")


def test_the_issue_commands_compose_offline(compose_plan):
    for method in ("none", "lora", "last_layers", "head_only", "full", "svm_embeddings"):
        plan = compose_plan("model=clip", "dataset=tiny_imagenet", f"method={method}")
        assert plan.run.dataset.task == "image_classification" and len(plan.run.dataset.label_names) == 200
        assert plan.run.model.hub_id == "openai/clip-vit-base-patch32" and plan.run.dataset.test_split == "valid"
    assert plan.run.dataset.label_names[:3] == ("goldfish", "European fire salamander", "bullfrog")


def _broken_copy(digits_dir: Path, tmp_path: Path, damage: str) -> tuple[Path, str]:
    """A small image folder with one defect, and the message it must give."""
    root = tmp_path / "images"
    for split in ("train", "validation"):
        for path in sorted((digits_dir / split).rglob("*.png"))[::20]:
            target = root / split / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    if damage == "empty class folder":
        (root / "train" / "ten").mkdir()
        return root, f"dataset.path: the class folder '{root / 'train' / 'ten'}' has no images"
    if damage == "not an image":
        bad = root / "train" / "3" / "notes.png"
        bad.write_text("not pixels")
        return root, f"{bad}: not an image (cannot identify image file"
    table = root / "table"
    table.mkdir()
    rows = [{"image": f"{index}.png" if index else "gone.png", "label": str(index % 2)} for index in range(12)]
    for row in rows[1:]:
        (table / row["image"]).write_bytes(next((root / "train").rglob("*.png")).read_bytes())
    (table / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return table, f"{table / 'gone.png'}: no such image file"


@pytest.mark.parametrize("damage,method", [("empty class folder", "none"), ("not an image", "none"),
                                           ("missing image", "none"), ("not an image", "svm_embeddings")])
def test_bad_image_data_is_a_one_line_error_naming_the_file(clip_run, digits_dir, tmp_path, damage, method):
    path, expected = _broken_copy(digits_dir, tmp_path, damage)
    with pytest.raises(UserError) as refused:
        execute(clip_run(f"dataset.path={path}", f"method={method}", output_dir=tmp_path / "run"))
    assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)


def test_lora_on_full_size_clip_trains_the_studys_491520_parameters(compose_plan, tiny_model):
    from transformers import CLIPConfig

    from conftest import FIXTURES
    from finetune.models import count_parameters
    from finetune.models import load_tokenizer
    from finetune.tasks.prompt_model import CLIPForPromptClassification

    plan = compose_plan("model=clip", "dataset=tiny_imagenet", "method=lora")
    tokenizer = load_tokenizer(str(tiny_model("clip")), plan.run.model)  # the real tokenizer and image processor
    task = plan.kind.build(plan.run, tokenizer, plan.run.dataset.label_names)
    config = CLIPConfig.from_dict(json.loads((FIXTURES / "clip-vit-base-patch32.config.json").read_text()))
    config.update(task.model_kwargs())
    with torch.device("meta"):  # the real sizes, without allocating their weights
        model = CLIPForPromptClassification(config)
    params = count_parameters(plan.method.prepare(model, plan.run.model, task, total_steps=10))
    assert params["trainable"] == 491_520
    assert params["total"] == 151_277_313 + 491_520


def test_a_crashed_image_run_resumes_to_identical_metrics(clip_run, tmp_path, monkeypatch):
    # 10 steps an epoch, images decoded in a worker process; the crash comes mid-way through epoch 1
    settings = ("method=lora", "train.lr=3e-3", "train.epochs=2", "train.save_every_steps=3",
                "dataset.max_train_samples=80", "dataset.max_eval_samples=20", "hardware.loader_workers=1")
    reference = execute(clip_run(*settings, output_dir=tmp_path / "reference"))
    with crash_after_checkpoint(monkeypatch, 6), pytest.raises(SimulatedCrash):
        execute(clip_run(*settings, output_dir=tmp_path / "crashed"))
    resumed = execute(clip_run(*settings, output_dir=tmp_path / "crashed"))
    assert resumed.training["resumed_from_step"] == 6
    assert resumed.training["validation_curve"] == reference.training["validation_curve"]
    assert resumed.metrics == reference.metrics


def test_tiny_imagenet_from_the_hub_keeps_images_encoded_and_names_the_classes(compose_plan, tiny_model, digits_dir,
                                                                                monkeypatch, tmp_path):
    import datasets

    paths = sorted((digits_dir / "train").rglob("*.png"))[:60]
    wordnet_ids = [f"n{index:08d}" for index in range(200)]  # the Hub copy's ClassLabel names

    def split(rows: list[Path]) -> datasets.Dataset:
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=wordnet_ids)})
        return datasets.Dataset.from_dict({"image": [{"bytes": path.read_bytes(), "path": None} for path in rows],
                                           "label": [int(path.parent.name) for path in rows]}, features=features)

    hub_copy = datasets.DatasetDict(train=split(paths[:40]), valid=split(paths[40:]))
    monkeypatch.setattr("datasets.load_dataset", lambda hub_id, config: hub_copy)
    plan = compose_plan("model=clip", f"model.path={tiny_model('clip')}", "dataset=tiny_imagenet", "method=none",
                      "hardware=cpu", output_dir=tmp_path / "run")
    assert plan.run.dataset.hub_id == "zh-plus/tiny-imagenet" and plan.run.dataset.path is None
    results = execute(plan)
    assert results.label_names[:2] == ["goldfish", "European fire salamander"]
    assert set(results.metrics) == {"validation", "test"}  # validation carved from train, test from 'valid'
    prompts = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["class_prompt_ids"]
    assert len(prompts) == 200
