#!/usr/bin/env bash
# The GPU part of the Wuxing MNIST results (docs/wuxing.md): one CUDA device.
#
#   bash examples/wuxing_gpu.sh MNIST_DIR RESULTS_DIR [BUDGET_SECONDS]
#
# 1. benchmark of one method-2 step on MODEL1 (bench/bench_wuxing_step.py);
# 2. backprop through time and method 2 on the time simulation (estimate="window"), from the
#    same initial network, each for the same wall-time budget;
# 3. scores every run in RESULTS_DIR (trained here or on a CPU with examples/wuxing_mnist.py)
#    on the test set: the time simulation (accuracy.device) and the steady-state twin.
set -euo pipefail
data=$1
results=$2
budget=${3:-120}
common=(--model MODEL1 --device cuda --data-dir "$data" --out "$results" --epochs 1
        --time-limit "$budget" --T 40 --dt 0.1 --readout final --log-every 50)

python bench/bench_wuxing_step.py --device cuda --batch 1024 --json "$results/bench-gpu.json"
python examples/wuxing_mnist.py train --name wuxing-model1-bptt --method bptt --lr 0.05 \
    --batch-size 256 "${common[@]}"
python examples/wuxing_mnist.py train --name wuxing-model1-method2-window --method method2 \
    --estimate window --eta 20 --batch-size 256 "${common[@]}"
python examples/wuxing_mnist.py score "$results"/wuxing-model*/ --device cuda --data-dir "$data" \
    --T 40 --dt 0.1 --readout final
