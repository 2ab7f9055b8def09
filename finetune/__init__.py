"""finetune: fine-tune transformer models and compare fine-tuning methods."""

__version__ = "0.1.0"
