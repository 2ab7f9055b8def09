#!/usr/bin/env bash
# The README's table of peft types by configuration (docs/results.md): every conf/method YAML of
# kind peft, with lora, ia3 and full as references, once each on MiniLM + rotten_tomatoes at its
# YAML's untuned learning rate: 2,000 training rows, 500 validation and test rows, 2 epochs, seed 1.
# One seed and no search: it shows that each runs and what it trains, not which is better
# (finetune-study answers that). Extra arguments go to the sweep, e.g. hardware=gpu.
#   scripts/peft_types_minilm.sh [OVERRIDES...]
set -euo pipefail
cd "$(dirname "$0")/.."
methods=(full lora ia3)
for yaml in conf/method/*.yaml; do
  if grep -q "/schema/method/peft@method" "$yaml"; then methods+=("$(basename "$yaml" .yaml)"); fi
done
finetune -m "method=$(IFS=,; echo "${methods[*]}")" dataset.max_train_samples=2000 dataset.max_eval_samples=500 \
    train.epochs=2 train.seed=1 hydra.sweep.dir=outputs/experiments/peft_types "$@"
finetune-report outputs/experiments/peft_types   # report.md, report.csv
