"""Classic baselines as methods: a linear SVM on TF-IDF features or on frozen embeddings. They run
outside the training loop (`standalone`) and report in the same results fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune.errors import one_of, require
from finetune.methods import register
from finetune.methods.base import Method, MethodSpec
from finetune.methods.linear_svm import fit_svm, inputs, tfidf_features

if TYPE_CHECKING:
    from pathlib import Path

    import torch


class _Svm(Method):
    standalone = True

    def refusal(self, run, kind) -> str | None:
        if kind.generates(run):
            return f"{run.method.name} is a classifier; it does not apply to dataset.task={run.dataset.task}"
        return None


@dataclass(frozen=True)
class SvmTfidfSpec(MethodSpec):
    kind: str = "svm_tfidf"
    ngram_max: int = 2  # word n-grams 1..ngram_max
    min_df: int = 2  # n-grams in fewer training texts are dropped
    C: float = 1.0  # inverse regularisation strength of the linear SVM

    def __post_init__(self) -> None:
        require(self.ngram_max > 0, "method.ngram_max", f"must be > 0, got {self.ngram_max}")
        require(self.min_df > 0, "method.min_df", f"must be > 0, got {self.min_df}")
        require(self.C > 0, "method.C", f"must be > 0, got {self.C}")


@register
class SvmTfidf(_Svm):
    """TF-IDF of word n-grams + a linear SVM (one-vs-rest for multilabel); the model is not used."""

    spec_class = SvmTfidfSpec
    uses_model = False

    def refusal(self, run, kind) -> str | None:
        if kind.input_name != "text":
            return f"{run.method.name} counts words; dataset.task={run.dataset.task} has no texts (try method=svm_embeddings)"
        return super().refusal(run, kind)

    def fit_standalone(self, run, kind, data, task, source: str | None, device: torch.device, model_dir: Path) -> Any:
        return fit_svm(run, data, task, lambda: tfidf_features(
            self.spec.ngram_max, self.spec.min_df, inputs(data, "train"), model_dir), model_dir)


@dataclass(frozen=True)
class SvmEmbeddingsSpec(MethodSpec):
    kind: str = "svm_embeddings"
    pooling: str = "mean"  # mean: average of the token states; first: the first token's state ([CLS]); images: CLIP's own
    C: float = 1.0  # inverse regularisation strength of the linear SVM

    def __post_init__(self) -> None:
        one_of(self.pooling, ("mean", "first"), "method.pooling")
        require(self.C > 0, "method.C", f"must be > 0, got {self.C}")


@register
class SvmEmbeddings(_Svm):
    """A linear SVM on the frozen encoder's pooled embeddings (of texts, or images: the task kind's)."""

    spec_class = SvmEmbeddingsSpec

    def fit_standalone(self, run, kind, data, task, source: str | None, device: torch.device, model_dir: Path) -> Any:
        return fit_svm(run, data, task, lambda: kind.frozen_embeddings(run, self.spec.pooling, source, device), model_dir)
