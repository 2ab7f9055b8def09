"""Image classification with a vision-language model (`dataset.task=image_classification`): an image
in, one of the label names out. Each class is a text prompt (`dataset.prompt_template`, "a photo of a
{label}"); the class logits are CLIP's scaled cosine similarities between the image embedding and
each prompt's text embedding, so the untrained model is the zero-shot classifier (method=none) and
training optimises the contrastive loss against the class prompts.

Images are read from an image folder, a table of image paths, or a Hub data set, and decoded per
batch, in the loader's worker processes, by the model's own image processor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoImageProcessor, CLIPProcessor, PreTrainedTokenizerBase

from finetune.embeddings import EmbeddingCache, FeatureSource
from finetune.hardware import loader_workers
from finetune.models import count_parameters, load_encoder
from finetune.tasks import register_task
from finetune.tasks.base import ModelParts, head_parts, label_config
from finetune.tasks.classification import Classification, SingleLabelScoring
from finetune.tasks.columns import LabelledSplits, SplitSource, require_column, require_strings
from finetune.tasks.images import checked_image, folder_layout, images_digest, pixel_values
from finetune.tasks.prompt_model import CLIPForPromptClassification, image_embeddings
from finetune.progress import progress

LABEL_FIELD = "{label}"


@dataclass(frozen=True)
class PromptImageClassification(SingleLabelScoring):
    """One label an image; logits from the image's similarity to each class prompt."""

    tokenizer: PreTrainedTokenizerBase
    image_processor: Any  # the model's own (CLIP: resize, centre crop, normalise); None for the metrics alone
    parts: ModelParts
    label_names: tuple[str, ...]
    prompt_template: str
    model_class: type = CLIPForPromptClassification
    peft_task_type: str | None = None
    main_metric: str = "accuracy"

    @property
    def processor(self) -> CLIPProcessor:
        return CLIPProcessor(image_processor=self.image_processor, tokenizer=self.tokenizer)

    def prompts(self) -> list[str]:
        return [self.prompt_template.replace(LABEL_FIELD, name) for name in self.label_names]

    def positions_after_source(self) -> int:
        return 0

    def model_kwargs(self) -> dict[str, Any]:
        encoded = self.tokenizer(self.prompts(), padding=True, truncation=True)
        return {"class_prompt_ids": encoded["input_ids"], "class_prompt_mask": encoded["attention_mask"],
                **label_config(self.label_names)}

    def encode(self, texts: list[Any], targets: list[Any], max_length: int) -> dict[str, list]:
        images = [checked_image(reference) for reference in texts]
        return {"image": images, "labels": targets, "truncated": [False] * len(images), "length": [1] * len(images)}

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return 0  # pixels, not tokens

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"pixel_values": pixel_values(self.image_processor, [f["image"] for f in features]),
                "labels": torch.tensor([f["labels"] for f in features])}



@register_task
class ImageClassification(Classification):
    """Single-label classification (the label column and its mapping as for texts) of images."""

    name = "image_classification"
    pipeline_tag = "zero-shot-image-classification"
    input_name = "image"
    decodes_in_loader = True

    def refusal(self, run) -> str | None:
        if run.model.architecture != "vision_language":
            return (f"dataset.task: image_classification needs a vision-language model; model={run.model.name} is "
                    f"{run.model.architecture} (use model=clip)")
        if LABEL_FIELD not in run.dataset.prompt_template:
            return f"dataset.prompt_template: '{run.dataset.prompt_template}' has no {LABEL_FIELD} for the class name"
        return None

    def read_local(self, directory: Path, spec) -> dict[str, Dataset] | None:
        splits = [split for split in (spec.train_split, spec.validation_split, spec.test_split) if split]
        return folder_layout(directory, splits, spec.image_column, spec.label_column)

    def input_column(self, dataset: Dataset, spec, source: SplitSource) -> tuple[Dataset, str]:
        column = spec.image_column
        require_column(dataset, "image_column", column, source)
        if isinstance(dataset.features[column], datasets.Image):  # a Hub image set: kept encoded until a batch needs it
            return dataset.cast_column(column, datasets.Image(decode=False)), column
        require_strings(dataset, "image_column", column, source)
        if spec.path is None:
            return dataset, column
        root = Path(spec.path).expanduser().resolve()  # relative paths in a table are relative to its folder
        return dataset.map(lambda batch: {column: [str(root / path) for path in batch[column]]}, batched=True), column

    def labelled(self, splits: dict[str, Dataset], spec) -> LabelledSplits:
        feature = splits["train"].features["raw_label"]
        if spec.label_names is None and isinstance(feature, datasets.ClassLabel):  # a Hub set names its classes
            spec = replace(spec, label_names=tuple(feature.names))
        return super().labelled(splits, spec)

    def build(self, run, tokenizer: PreTrainedTokenizerBase, label_names: tuple[str, ...]) -> PromptImageClassification:
        # the image processor is stored beside the tokenizer: in the model source, and in a run's model/;
        # a standalone baseline passes no tokenizer, and uses only the metrics
        image_processor = AutoImageProcessor.from_pretrained(tokenizer.name_or_path) if tokenizer else None
        return PromptImageClassification(tokenizer, image_processor, head_parts(run), label_names,
                                         run.dataset.prompt_template)

    def frozen_embeddings(self, run, pooling: str, source: str, device: torch.device) -> FeatureSource:
        """The frozen CLIP's image embeddings (its projected pooled output, normalised), for the SVM."""
        model = load_encoder(source, run.model).to(device).eval()
        image_processor = AutoImageProcessor.from_pretrained(source)
        cache = EmbeddingCache.of(run, model, device, embedding="image_embeds")
        batch_size = run.train.evaluation_batch_size

        def embed(images: list[Any], split: str) -> np.ndarray:
            images = [checked_image(reference) for reference in images]  # a bad file: one line, before any worker
            compute = partial(_image_embeddings, model, image_processor, images, batch_size,
                              loader_workers(run.hardware, decodes_inputs=True), device)
            return cache.get(split, images_digest(images), compute)

        return FeatureSource(embed, count_parameters(model)["total"], {})


def _image_embeddings(model: nn.Module, image_processor: Any, images: list[Any], batch_size: int, workers: int,
                      device: torch.device) -> np.ndarray:
    vectors = []
    loader = DataLoader(images, batch_size=batch_size, collate_fn=partial(pixel_values, image_processor), num_workers=workers)
    for pixels in progress(loader, desc="embed", unit="batches", leave=False):
        with torch.no_grad():
            vectors.append(image_embeddings(model, pixels.to(device)).float().cpu().numpy())
    return np.concatenate(vectors)
