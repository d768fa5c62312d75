#!/usr/bin/env bash
# The training recipe of the next shipped weights, on one GPU, in one prepared run (about 8 minutes; give the device call timeout_s 600).
#
#   1. pools, simulated on the machine's CPU cores (`simulate-pool --workers`):
#      general/  48 tomograms: Fourier-mask and tilt-series imaging (mixed), every distractor kind,
#                templates at 0.6-1.8 times their size (particles of about 6-45 voxels across);
#      species/  48 tomograms: the same imaging and distractors, the six templates in varied proportions
#                at their real sizes (size is what tells the species apart);
#      val/      8 tomograms of each recipe, other random seeds (for the validation loss only).
#   2. a 20-step probe of the training speed, then two trainings side by side on the one GPU, each with
#      as many steps as fit in TRAIN_MINUTES (cosine schedule to the end):
#      general.pt      the species-agnostic two-head network, fine-tuned from the shipped twohead;
#      six-species.pt  the six templates as six species, the whole network, from twohead with a new
#                      species branch.
#   Results in $OUT: the checkpoints, the training logs, timings.json. Scoring runs on the CPU afterwards
#   (docs/models.md): python benchmarks/bench_species.py score Q --weights six-species.pt, and
#   python benchmarks/bench_generalization.py score G --weights general.pt.
#
# From the repository root, with wheels/ beside it (bash benchmarks/gpu/gpu_check.sh --build-wheels
# wheels; the list there includes what the simulator needs). `bash benchmarks/gpu/train_recipe.sh --dry`
# runs every step on the CPU with tiny sizes (no figures), to check the script.
# Environment: OUT (/tmp/train_out), TRAIN_MINUTES (4), WORKERS (the cores less 2), PYTHON.
set -u
REPO=$(pwd); OUT=${OUT:-/tmp/train_out}; mkdir -p "$OUT"
T0=$(date +%s)
el() { echo "== $1 at $(( $(date +%s) - T0 )) s"; }
DRY=0; [ "${1:-}" = "--dry" ] && DRY=1
if [ $DRY = 1 ]; then
  PY=${PYTHON:-$REPO/.venv/bin/python}; DEVICE=cpu; AMP=--no-amp
  COUNT=2; VCOUNT=1; SHAPE=48,96,96; PATCH=16; BATCH=2; MINUTES=${TRAIN_MINUTES:-0.5}; WORK=$OUT/work
else
  PY=${PYTHON:-python3}; DEVICE=cuda; AMP=--amp
  COUNT=48; VCOUNT=8; SHAPE=64,160,160; PATCH=48; BATCH=16; MINUTES=${TRAIN_MINUTES:-4}; WORK=/tmp/recipe
  if ! ls wheels/*.whl >/dev/null 2>&1 && ! $PY -c "import dask, zarr, skimage, cc3d" 2>/dev/null; then
    echo "no wheels/ and the packages are missing: see the header"; exit 1
  fi
  if ls wheels/*.whl >/dev/null 2>&1; then
    SITE=/tmp/cryodet_site
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" wheels/*.whl 2>&1 | tail -2
    export PYTHONPATH=$SITE:$REPO
  fi
fi
export PYTHONPATH=${PYTHONPATH:-$REPO} PYTHONUNBUFFERED=1
NCPU=$(nproc); WORKERS=${WORKERS:-$(( NCPU > 3 ? NCPU - 2 : 1 ))}
CLI="$PY -m cryodet_dask"
mkdir -p "$WORK"
el setup

# ---- 1. pools (training seeds 1100/1200, validation 2100/2200; the held-out test pools use other seeds)
DISTRACT="--distractors microtubule,actin,gold,ice,edge,membrane"
$CLI -q simulate-pool "$WORK/general" --count $COUNT --seed 1100 --shape $SHAPE --imaging mixed $DISTRACT \
    --size-range 0.6,1.8 --workers $WORKERS || exit 1
$CLI -q simulate-pool "$WORK/species" --count $COUNT --seed 1200 --shape $SHAPE --imaging mixed $DISTRACT \
    --species-mix varied --workers $WORKERS || exit 1
$CLI -q simulate-pool "$WORK/general_val" --count $VCOUNT --seed 2100 --shape $SHAPE --imaging mixed $DISTRACT \
    --size-range 0.6,1.8 --workers $WORKERS || exit 1
$CLI -q simulate-pool "$WORK/species_val" --count $VCOUNT --seed 2200 --shape $SHAPE --imaging mixed $DISTRACT \
    --species-mix varied --workers $WORKERS || exit 1
el pools

# ---- 2. training
COMMON="--patch-size $PATCH --batch-size $BATCH --validation-batches 6 --invert 0.5 --patience 1000 \
        --device $DEVICE $AMP --threads 4 --seed 1"
SPECIES="--species 4v4r:220,4cr2:190,3j9i:150,1bxn:115,7n4y:150,6pxm:140"
# the probe: 20 steps of the larger of the two networks, start-up included (so the estimate is low)
P0=$(date +%s.%N)
$CLI -q train "$WORK/probe.pt" --init twohead $SPECIES --replace-species --pool "$WORK/species" \
    --epochs 1 --steps-per-epoch 20 --learning-rate 1e-3 $COMMON > "$OUT/probe.log" 2>&1 || { cat "$OUT/probe.log"; exit 1; }
P1=$(date +%s.%N)
# two trainings share the GPU: each gets half the probe's rate
STEPS=$($PY -c "import math; s=($P1-$P0)/20; print(max(20, int(float('$MINUTES')*60/(2*s)) // 50 * 50))")
EPOCHS=$(( STEPS / 50 > 0 ? STEPS / 50 : 1 ))
echo "probe: $(python3 -c "print(round(($P1-$P0)/20, 3))") s per step alone; $EPOCHS epochs of 50 steps each"
el probe
$CLI train "$OUT/general.pt" --init twohead --pool "$WORK/general" --validation-pool "$WORK/general_val" \
    --epochs $EPOCHS --steps-per-epoch 50 --learning-rate 1e-3 --lr-schedule cosine --snapshot-every 4 \
    --max-minutes $MINUTES $COMMON > "$OUT/general.log" 2>&1 &
G=$!
$CLI train "$OUT/six-species.pt" --init twohead $SPECIES --replace-species --pool "$WORK/species" \
    --validation-pool "$WORK/species_val" --epochs $EPOCHS --steps-per-epoch 50 --learning-rate 1e-3 \
    --lr-schedule cosine --snapshot-every 4 --max-minutes $MINUTES $COMMON > "$OUT/six-species.log" 2>&1 &
S=$!
wait $G; RG=$?; wait $S; RS=$?
el train
tail -n 3 "$OUT/general.log" "$OUT/six-species.log"
$PY - "$OUT" "$RG" "$RS" "$EPOCHS" "$(( $(date +%s) - T0 ))" <<'PY'
import json, sys
out, rg, rs, epochs, secs = sys.argv[1:]
json.dump({"general_rc": int(rg), "six_species_rc": int(rs), "epochs": int(epochs), "steps_per_epoch": 50,
           "seconds": int(secs)}, open(f"{out}/timings.json", "w"), indent=1)
PY
ls -la "$OUT"
el done
