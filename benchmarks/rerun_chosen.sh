#!/usr/bin/env bash
# Re-run the two NeuralFuse recipes chosen in neuralfuse_fashion.json (see benchmarks/README.md):
# the base CNN (fashion_cnn_e2), then the 1% and 2% BER generators side by side, one thread
# each, for the epochs the recorded 50-minute runs completed (an epoch budget instead of a wall
# budget, so a loaded machine gives the same steps). Resumable: re-run it and every stage
# continues from its checkpoint. Then: python benchmarks/fresh_maps.py (evaluation on new maps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin}
C=.cache/fresh
mkdir -p "$C"
"$PY/sramsim" train-base --model cnn --data fashion-mnist --epochs 2 --seed 0 \
    --out .cache/fashion_cnn_e2.pt --no-progress > "$C/base.log" 2>&1
common=(--base .cache/fashion_cnn_e2.pt --generator UNetS --width 0.25 --n-perturbed 2 --lam 2
        --lr 2e-3 --lr-step 4 --batch-size 64 --limit 60000 --val-split 5000 --val-maps 8
        --no-progress --json)
run() {  # run BER TRAIN_BER SEED EPOCHS
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
    "$PY/fusion" train "${common[@]}" --ber "$2" --val-ber "$1" --seed "$3" --epochs "$4" \
        --out "$C/UNetS-w0.25-ber$1-train$2-lam2-seed$3" > "$C/train-ber$1.json" 2> "$C/train-ber$1.log"
}
run 0.01 0.02 0 14 &
run 0.02 0.03 1 13 &
wait
