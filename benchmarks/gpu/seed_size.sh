#!/usr/bin/env bash
# On a GPU machine, from the repository root with wheels/ beside it (bash benchmarks/gpu/gpu_check.sh
# --build-wheels wheels): the GPU numerics tests, then `cryodet-dask detect` end to end on a simulated
# 256x512x512 tomogram (layouts A threads, F local-cuda, H local-cuda -ps 256, E external GPU worker +
# CPU workers) and on the seed-size 464x928x928 (F local-cuda with planned tiles, T with --tile 128 = one
# chunk per forward pass, H -ps 256).  About 5 minutes on one H200.  SKIP_256=1 skips the first size;
# LAYOUTS_256 / LAYOUTS_464 choose the layouts (letters as in e2e.py).
set -u
REPO=$(pwd); OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
PY=python3; SITE=/tmp/cryodet_site; T0=$(date +%s)
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" wheels/*.whl 2>&1 | tail -2
export PYTHONPATH=$SITE:$REPO PYTHONUNBUFFERED=1
el() { echo "== $1 at $(( $(date +%s) - T0 )) s"; }
el install
timeout 110 $PY -m pytest -q -s -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log" | tail -12
el tests
W=/tmp/w1; W2=/tmp/w2; mkdir -p $W $W2
timeout 60 $PY benchmarks/gpu/e2e.py --prepare --work $W --shape 256,512,512 --out $OUT/e2e.json
[ -n "${SKIP_256:-}" ] || timeout 170 $PY benchmarks/gpu/e2e.py --work $W --shape 256,512,512 --budget 150 --only ${LAYOUTS_256:-F,A,E,H} --out $OUT/e2e.json 2>&1 | grep -v "^\s" | tail -12
el e2e-256
timeout 60 $PY - <<'PY'
import mrcfile, numpy as np
with mrcfile.open("/tmp/w1/tomo.mrc", permissive=True) as m: t = np.asarray(m.data)
v = np.tile(t, (2, 2, 2))[:464, :928, :928]
with mrcfile.new("/tmp/w2/tomo.mrc", overwrite=True) as m:
    m.set_data(np.ascontiguousarray(v)); m.voxel_size = 10.0
print("big tomogram", v.shape)
PY
el tile
timeout 200 $PY benchmarks/gpu/e2e.py --work $W2 --shape 464,928,928 --budget 180 --only ${LAYOUTS_464:-F,T,H} --out $OUT/e2e_big.json 2>&1 | grep -v "^\s" | tail -8
el e2e-464
$PY benchmarks/gpu/summary.py $OUT/nofwd.json $OUT/e2e.json 2>&1 | tail -12
$PY benchmarks/gpu/summary.py $OUT/nofwd.json $OUT/e2e_big.json 2>&1 | tail -6
el done
