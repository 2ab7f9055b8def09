"""How loud the libraries are: finetune prints its own progress and one line per problem."""

from __future__ import annotations

import logging


def quiet_libraries() -> None:
    """Library logs at error level, no download/load progress bars, no deprecation notes meant for library authors."""
    import warnings

    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers|peft")
    # decoder-only models generate from embeddings on purpose (finetune.tasks.generation)
    warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
