"""CLIP as a classifier over class prompts, the model that `dataset.task=image_classification` trains."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel
from transformers.modeling_outputs import ImageClassifierOutput


def image_embeddings(model: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """CLIP's normalised image embeddings: the image tower's pooled output, projected into the joint space."""
    pooled = model.vision_model(pixel_values=pixel_values).pooler_output
    return F.normalize(model.visual_projection(pooled), dim=-1)


class CLIPForPromptClassification(CLIPModel):
    """CLIP whose class logits are the scaled cosine similarities between an image's embedding and the
    text embedding of each class prompt ("a photo of a {label}"); the loss is cross-entropy over the
    classes, CLIP's contrastive objective against the class prompts.

    The prompts' token ids are in the config (`class_prompt_ids`, `class_prompt_mask`), so a saved model
    loads as a classifier, and as a plain `CLIPModel` for `pipeline("zero-shot-image-classification")`.
    Their text features are computed once per evaluation, and once per training mode switch while the
    text side is frozen; every step only while a text parameter trains.
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__(config)
        self._prompt_features: torch.Tensor | None = None

    def train(self, mode: bool = True) -> CLIPForPromptClassification:
        self._prompt_features = None  # the text side may change from here on
        return super().train(mode)

    def class_features(self) -> torch.Tensor:
        """The class prompts' normalised text embeddings (classes x projection size)."""
        if self.training and self._text_trains():
            return self._encode_prompts()
        if self._prompt_features is None:
            with torch.no_grad():
                self._prompt_features = self._encode_prompts()
        return self._prompt_features

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> ImageClassifierOutput:
        images = image_embeddings(self, pixel_values)
        logits = self.logit_scale.exp() * images @ self.class_features().to(images.dtype).T
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    def _encode_prompts(self) -> torch.Tensor:
        # from the config on every call: a few ids, and no buffer for from_pretrained to leave uninitialised
        device = self.logit_scale.device
        ids = torch.tensor(self.config.class_prompt_ids, device=device)
        mask = torch.tensor(self.config.class_prompt_mask, device=device)
        pooled = self.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)

    def _text_trains(self) -> bool:
        return any(parameter.requires_grad for module in (self.text_model, self.text_projection)
                   for parameter in module.parameters())
