#!/usr/bin/env bash
# The method study behind the README's method table (docs/results.md): every method at three learning rates, 3 epochs,
# seeds 1-3 (conf/experiment/method_study.yaml), then one report of each method's validation-best
# configuration. The grids were set when the defaults were lr 5e-5 (full), 5e-4 (lora, on query and
# value), 3e-3 (ia3, prompt and prefix tuning), 1e-4 (last_layers) and 1e-3 (head_only); the method
# YAMLs now hold the validation-best learning rates, and conf/model/minilm.yaml the best LoRA targets
# (the first LoRA grid names the query and value targets it ran with).
# Extra arguments go to every sweep, e.g. hardware=gpu or hydra/launcher=joblib hydra.launcher.n_jobs=4.
#   scripts/method_study.sh [OVERRIDES...]
set -euo pipefail
grids=(
  "full 2e-5,5e-5,1e-4"
  "lora 5e-4,1e-3,2e-3 method.target_modules=[query,value]"
  "ia3 3e-3,1e-2,3e-2"
  "prompt_tuning 3e-3,1e-2,3e-2"
  "prefix_tuning 3e-3,1e-2,3e-2"
  "last_layers 1e-4,3e-4,1e-3"
  "head_only 1e-3,3e-3,1e-2"
)
for grid in "${grids[@]}"; do
  read -r method lrs extra <<<"$grid"
  finetune -m +experiment=method_study "method=$method" "train.lr=$lrs" ${extra:+"$extra"} "$@"
done
# the two variants the README's table also holds: LoRA on every linear layer, prompt tuning for 6 epochs
finetune -m +experiment=method_study method=lora "method.target_modules=[query,key,value,dense]" train.lr=5e-4,1e-3,2e-3 \
    hydra.sweep.dir=outputs/experiments/method_study/lora_all_linear "$@"
finetune -m +experiment=method_study method=prompt_tuning train.epochs=6 train.lr=1e-2,3e-2,1e-1 \
    hydra.sweep.dir=outputs/experiments/method_study/prompt_tuning_6_epochs "$@"
for baseline in svm_tfidf svm_embeddings; do  # one sweep each: the sweep dir is named after the method
  finetune -m +experiment=method_study "method=$baseline" "$@"
done
finetune-report outputs/experiments/method_study --best --baseline full   # best.md, best.csv, best_*.png
