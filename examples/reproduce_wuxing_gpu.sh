#!/usr/bin/env bash
# The Wuxing MNIST runs of docs/wuxing.md that were trained on one CUDA GPU.
#
#   bash examples/reproduce_wuxing_gpu.sh MNIST_DIR [RESULTS_DIR]
#
# Every run gets the same wall-time budget (BUDGET seconds, default 240) and all of them run at
# once on the one GPU (one CPU thread each): their steps are small and launch-bound, so they
# share the card well, but the samples-per-second figures in model.json are those of a shared
# card. Each run validates on the time simulation (the device) after every epoch, keeps its
# best epoch, and decays its step (Adam learning rate, or method 2's eta) on a cosine over the
# epochs that fit its budget after the first one. The neuron twin is the committed one
# (examples/wuxing_mnist.py twin, fitted on the CPU). Then the test set is scored once per
# run, on the time simulation (and on the twin where the run used one).
#
# Environment: DEVICE (default cuda), BUDGET (seconds per run), RUNS (which runs, default
# "twin adders method2 operating model2 bptt"), M2_ETAS and OP_ETAS (method 2's candidate steps,
# paper and operating-point reversal; default "3 10" and "5 15"), EXTRA (more train arguments,
# e.g. "--n-train 512 --n-val 100" for a smoke test), SCORE_EXTRA (more score arguments, e.g.
# "--n-test 200"), NVAL (validation images of the BPTT stages, default 3000), M1_START,
# M1_BUDGET and M1_KLR (the MODEL1 BPTT stage, RUNS=model1-bptt7; M1_KLR, default 0.001, is the
# Adam step of the neurons' K, trained with c; 0 keeps K fixed), A_START and A_BUDGET (the
# adders stage that trains K, RUNS=adders-bptt6k). The results in docs/results
# come from two calls on one H100:
#   BUDGET=270 bash examples/reproduce_wuxing_gpu.sh MNIST_DIR         (kept: adders)
#   BUDGET=180 RUNS="method2 operating bptt" M2_ETAS=3 OP_ETAS=15 \
#       bash examples/reproduce_wuxing_gpu.sh MNIST_DIR                 (kept: the other three)
# (the steps of the second call are the ones the first call chose on validation), and the two
# adders BPTT stages at the end of this script from two calls on one H200:
#   RUNS=adders-bptt3 bash examples/reproduce_wuxing_gpu.sh MNIST_DIR
#   RUNS=adders-bptt4 bash examples/reproduce_wuxing_gpu.sh MNIST_DIR
# The result names wuxing-model1-method2, wuxing-model1-bptt and wuxing-model1-adders are
# not trained here: examples/reproduce_wuxing.sh ends by copying to each the run of that
# experiment that validates best (these runs among the candidates).
set -uo pipefail
data=$1
out=${2:-docs/results}
device=${DEVICE:-cuda}
budget=${BUDGET:-240}
twin=docs/results/wuxing-neuron-twin
# shellcheck disable=SC2206
extra=(${EXTRA:-})
common=(--data-dir "$data" --out "$out" --device "$device" --val-mode time --schedule cosine
        --epochs 200 --time-limit "$budget" --log-every 500 "${extra[@]}")

runs=" ${RUNS:-twin adders method2 operating model2 bptt} "

run() {  # run KEY NAME ARGS...: one training run in the background, its log beside its results
    local key=$1 name=$2
    shift 2
    [[ $runs == *" $key "* ]] || return 0
    mkdir -p "$out/$name"
    timeout $((budget * 3 + 300)) python examples/wuxing_mnist.py train --name "$name" \
        "${common[@]}" "$@" >"$out/$name/train.log" 2>&1 || echo "train $name failed" >&2 &
}

run twin wuxing-model1-twin --method twin --lr 0.005 --twin "$twin" --T 60
run adders wuxing-model1-adders-h100 --method twin --lr 0.005 --fan-in 16 --c0 0.25 \
    --twin "$twin" --T 60
for eta in ${M2_ETAS:-3 10}; do  # method 2's step is chosen on the validation split below
    run method2 "wuxing-model1-method2-paper-eta$eta" --method method2 --eta "$eta" \
        --twin "$twin" --T 60
done
for eta in ${OP_ETAS:-5 15}; do
    run operating "wuxing-model1-method2-operating-eta$eta" --method method2 --reversal operating \
        --eta "$eta" --twin "$twin" --T 60
done
run model2 wuxing-model2-method2-paper --model MODEL2 --method method2 --eta 3 --twin "$twin" \
    --T 60
run bptt wuxing-model1-bptt-h100 --method bptt --lr 0.05 --batch-size 128 --T 40 --dt 0.1
wait

keep() {  # keep NAME START|- CANDIDATE...: the candidate (in $out) that validates best during
    # training is copied to NAME, with the choice recorded; START, unless "-", is the run the
    # candidates continue, and one must validate better than its last `validate` result
    local name=$1 start=$2
    shift 2
    local from=()
    [[ $start == - ]] || from=(--start "$out/$start")
    python examples/wuxing_mnist.py keep "${@/#/$out/}" --name "$name" --out "$out" "${from[@]}"
}

# method 2's step: keep the candidate with the best validation accuracy under the run's name;
# the others stay beside it, unscored
for name in wuxing-model1-method2-paper wuxing-model1-method2-operating; do
    cands=()
    for f in "$out/$name"-eta*/model.json; do
        [[ -f $f ]] && cands+=("$(basename "$(dirname "$f")")")
    done
    ((${#cands[@]})) && keep "$name" - "${cands[@]}"
done

# shellcheck disable=SC2206
score=(--data-dir "$data" --device "$device" --readout final --dt 0.1 --batch-size 2500
       ${SCORE_EXTRA:-})
# score only what this call trained
for pair in twin:wuxing-model1-twin adders:wuxing-model1-adders-h100 \
    method2:wuxing-model1-method2-paper operating:wuxing-model1-method2-operating \
    model2:wuxing-model2-method2-paper; do
    key=${pair%%:*} name=${pair#*:}
    [[ $runs == *" $key "* && -f "$out/$name/model.json" ]] || continue
    timeout 300 python examples/wuxing_mnist.py score "$out/$name" --modes time,surrogate \
        --T 60 "${score[@]}" || echo "score $name failed" >&2
done
if [[ $runs == *" bptt "* && -f "$out/wuxing-model1-bptt-h100/model.json" ]]; then
    timeout 300 python examples/wuxing_mnist.py score "$out/wuxing-model1-bptt-h100" --modes time \
        --T 40 "${score[@]}" || echo "score wuxing-model1-bptt-h100 failed" >&2
fi

# Adders, BPTT stages at the device's settings (T = 60, dt = 0.1) from the CPU-trained
# wuxing-model1-adders-bptt2 (RUNS="adders-bptt3 adders-bptt4"; neither is in the default RUNS).
# adders-bptt3: two candidates side by side for 360 s, eager and compiled (the compiled one sees
# about three times the images), kept on validation (3,000 images) against the run they start
# from, validated on the same card; the kept one is scored. adders-bptt4: the kept one, then
# images shifted by up to one pixel (against memorising); scored only if it validates better.
nval=${NVAL:-3000}  # validation images of the BPTT stages (fewer only for a smoke test)
bptt_stage=(--method bptt --T 60 --dt 0.1 --lr 0.0003 --batch-size 256 --n-val "$nval"
            --val-mode time --threads 2 --log-every 10 --device "$device" --data-dir "$data"
            --out "$out" "${extra[@]}")
if [[ $runs == *" adders-bptt3 "* ]]; then
    start=wuxing-model1-adders-bptt2
    for c in "a" "b --compile"; do
        set -- $c
        python examples/wuxing_mnist.py train --name "wuxing-model1-adders-gpu-$1" "${@:2}" \
            --init "$out/$start" --time-limit 360 --seed 1 "${bptt_stage[@]}" &
    done
    python examples/wuxing_mnist.py validate "$out/$start" --mode time --T 60 --dt 0.1 \
        --n-val "$nval" --device "$device" --threads 2 --data-dir "$data"
    wait
    keep wuxing-model1-adders-bptt3 "$start" wuxing-model1-adders-gpu-a \
        wuxing-model1-adders-gpu-b &&
        python examples/wuxing_mnist.py score "$out/wuxing-model1-adders-bptt3" --modes time \
            --T 60 "${score[@]}"
fi
if [[ $runs == *" adders-bptt4 "* ]]; then
    start=wuxing-model1-adders-bptt3
    python examples/wuxing_mnist.py train --name wuxing-model1-adders-gpu-c --compile --shift 1 \
        --init "$out/$start" --time-limit 230 --seed 2 "${bptt_stage[@]}"
    python examples/wuxing_mnist.py validate "$out/$start" --mode time --T 60 --dt 0.1 \
        --n-val "$nval" --device "$device" --threads 2 --data-dir "$data"
    keep wuxing-model1-adders-bptt4 "$start" wuxing-model1-adders-gpu-c &&
        python examples/wuxing_mnist.py score "$out/wuxing-model1-adders-bptt4" --modes time \
            --T 60 "${score[@]}"
fi

gpu_stage() {  # gpu_stage KEPT START T BUDGET NAME:ARGS...: BPTT candidates side by side from
    # START (compiled, batch 256, dt = 0.1, a cosine over the epochs that fit BUDGET seconds
    # after the first, validated on NVAL images each epoch), START validated on the same card;
    # the best is kept as KEPT if it beats START, and scored
    local kept=$1 start=$2 T=$3 budget=$4 names=() cand args
    shift 4
    for cand in "$@"; do
        names+=("${cand%%:*}")
        read -ra args <<<"${cand#*:}"
        python examples/wuxing_mnist.py train --name "${cand%%:*}" "${args[@]}" \
            --init "$out/$start" --time-limit "$budget" --epochs 200 --schedule cosine \
            --method bptt --T "$T" --dt 0.1 --compile --batch-size 256 --n-val "$nval" \
            --val-mode time --threads 2 --log-every 20 --device "$device" --data-dir "$data" \
            --out "$out" "${extra[@]}" &
    done
    python examples/wuxing_mnist.py validate "$out/$start" --mode time --T "$T" --dt 0.1 \
        --n-val "$nval" --device "$device" --threads 2 --compile --data-dir "$data"
    wait
    keep "$kept" "$start" "${names[@]}" &&
        python examples/wuxing_mnist.py score "$out/$kept" --modes time --T "$T" --compile \
            "${score[@]}"
}

# MODEL1, a BPTT stage at the device's settings (T = 40, dt = 0.1) from the best CPU-trained
# MODEL1 network (M1_START, default wuxing-model1-twin-bptt8k; RUNS=model1-bptt7, not in the
# default RUNS), K trained with c (M1_KLR): lr 0.003 and 0.006, one seed. Prepared for the next
# GPU call, not run on one: smoke-tested on the CPU as its own block, whose commands gpu_stage
# repeats word for word (checked by printing them); since then its start moved to the eighth
# CPU stage's winner, its K step to the sixth's (reproduce_wuxing.sh), and the stage was renamed.
# The eighth CPU stage won with smaller steps (lr 0.001, K 0.0005) than these: try those first.
if [[ $runs == *" model1-bptt7 "* ]]; then
    klr=${M1_KLR:-0.001}
    gpu_stage wuxing-model1-bptt7 "${M1_START:-wuxing-model1-twin-bptt8k}" 40 \
        "${M1_BUDGET:-420}" "wuxing-model1-gpu-a:--lr 0.003 --k-lr $klr --seed 5" \
        "wuxing-model1-gpu-b:--lr 0.006 --k-lr $klr --seed 5"
fi

# Adders, a BPTT stage at the device's settings (T = 60, dt = 0.1) that trains the neurons' K
# with c (RUNS=adders-bptt6k, not in the default RUNS) from A_START (default
# wuxing-model1-adders-bptt5k, the CPU stage of reproduce_wuxing.sh at these settings, whose
# smaller steps won: lr 0.0001, K 0.0001): Adam lr 0.0001 and 0.00005 with K's step equal,
# A_BUDGET seconds (default 420). Prepared for the next GPU call, not run (its commands
# checked by printing them).
# The adders stages above stay as they ran (eager and compiled candidates, no cosine).
if [[ $runs == *" adders-bptt6k "* ]]; then
    gpu_stage wuxing-model1-adders-bptt6k "${A_START:-wuxing-model1-adders-bptt5k}" 60 \
        "${A_BUDGET:-420}" "wuxing-model1-adders-gpu-d:--lr 0.0001 --k-lr 0.0001 --seed 12" \
        "wuxing-model1-adders-gpu-e:--lr 0.00005 --k-lr 0.00005 --seed 12"
fi
