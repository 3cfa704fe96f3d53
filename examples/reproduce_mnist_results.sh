#!/usr/bin/env bash
# Re-run the MNIST experiments of docs/experiments.md and refresh docs/results/NAME/.
#   bash examples/reproduce_mnist_results.sh PATH/TO/MNIST [NAME ...]
# Each NAME is a config examples/NAME.toml; its run folder is runs/NAME, and metrics.json, the
# plots and the command are copied to docs/results/NAME/.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: $0 PATH/TO/MNIST [NAME ...]}"
shift
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(almost-neuron-mnist almost-neuron-mnist-eps0 almost-neuron-mnist-eps0.05
         almost-neuron-mnist-eps0.2 almost-neuron-mnist-eps0.5 wuxing-mnist raw-almost-neuron-digits)
fi
for name in "${names[@]}"; do
  cmd="quasineuron run examples/$name.toml --out runs/$name --data-dir PATH/TO/MNIST --no-progress"
  echo "== $cmd"
  quasineuron run "examples/$name.toml" --out "runs/$name" --data-dir "$data" --no-progress
  mkdir -p "docs/results/$name"
  cp "runs/$name/metrics.json" "runs/$name/summary.md" "runs/$name/training.png" \
     "runs/$name/accuracy.png" "docs/results/$name/"
  echo "$cmd" > "docs/results/$name/command.txt"
done
