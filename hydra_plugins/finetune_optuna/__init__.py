"""finetune's Optuna sweeper for Hydra: `hydra/sweeper=optuna` (see finetune.search)."""
