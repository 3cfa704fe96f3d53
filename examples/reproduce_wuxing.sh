#!/usr/bin/env bash
# The Wuxing MNIST results of docs/wuxing.md, end to end.
#
#   bash examples/reproduce_wuxing.sh MNIST_DIR [RESULTS_DIR]
#
# Training runs on the CPU, one thread per run (two at a time on two cores), each for a fixed
# wall-time budget; scoring the 10,000 test images on the time simulation uses a CUDA device
# when there is one (about 10 s per network on an H100; about 15 minutes per network on one CPU
# core). Each run's model.json and metrics.json record the exact command.
set -euo pipefail
data=$1
out=${2:-docs/results}
twin="$out/wuxing-neuron-twin"
c=(--data-dir "$data" --out "$out" --log-every 200)

python examples/wuxing_mnist.py twin --out "$twin"
python examples/wuxing_mnist.py train --name wuxing-model1-twin --method twin --lr 0.005 \
    --twin "$twin" --epochs 6 --time-limit 700 "${c[@]}"
stage1=$(mktemp -d)
cp -r "$out/wuxing-model1-twin/." "$stage1"
python examples/wuxing_mnist.py train --name wuxing-model1-twin --method twin --lr 0.002 \
    --twin "$twin" --init "$stage1" --epochs 5 --time-limit 720 "${c[@]}"
python examples/wuxing_mnist.py train --name wuxing-model1-adders --method twin --lr 0.005 \
    --fan-in 16 --c0 0.25 --twin "$twin" --epochs 6 --time-limit 600 "${c[@]}"
python examples/wuxing_mnist.py train --name wuxing-model1-method2 --method method2 --eta 3 \
    --twin "$twin" --epochs 6 --time-limit 640 "${c[@]}"
python examples/wuxing_mnist.py train --name wuxing-model2-method2 --model MODEL2 \
    --method method2 --eta 3 --twin "$twin" --epochs 6 --time-limit 640 "${c[@]}"
python examples/wuxing_mnist.py train --name wuxing-model1-method1 --method method1 --eta1 2 \
    --time-limit 900 "${c[@]}"
python examples/wuxing_mnist.py train --name wuxing-model1-mixed --method mixed --eta 20 \
    --eta1 2 --time-limit 840 "${c[@]}"
python examples/wuxing_mnist.py train --name wuxing-model1-bptt --method bptt --lr 0.05 \
    --batch-size 32 --T 40 --dt 0.1 --readout final --n-val 500 --time-limit 1200 "${c[@]}"

# surrogate scores (twin or exact steady state), then the time simulation (the device)
runs=$(ls -d "$out"/wuxing-model*/ | grep -v bptt)
python examples/wuxing_mnist.py score $runs --data-dir "$data" --modes surrogate --T 60
python examples/wuxing_mnist.py score $runs --data-dir "$data" --modes time --T 60 \
    --dt 0.1 --readout final --batch-size 2500
python examples/wuxing_mnist.py score "$out/wuxing-model1-bptt" --data-dir "$data" \
    --modes time,surrogate --T 40 --dt 0.1 --readout final --batch-size 2000
python examples/wuxing_curves.py "$out" --out "$out/wuxing-curves.png"
