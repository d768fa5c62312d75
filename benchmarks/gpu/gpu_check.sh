#!/usr/bin/env bash
# cryodet-dask GPU check: forward throughput per network / chunk / precision, and `cryodet-dask detect`
# end to end under several cluster layouts with GPU utilization sampled during prediction.
#
# Layout: this script with its Python files beside it (fwd_bench.py, e2e.py,
# detect_wrapper.py, summary.py).  Run it FROM THE REPOSITORY ROOT (a checkout of cryodet-dask):
#
#   bash gpu_check.sh --build-wheels [DIR]   # here, on a machine with pip and PyPI: wheels for the
#                                            # GPU machine (Python 3.12, manylinux x86_64) into DIR
#                                            # (default ./wheels), size checked < 60 MiB
#   bash gpu_check.sh --dry                  # CPU-only smoke test of the whole script (tiny sizes)
#   bash gpu_check.sh                        # the real check on a CUDA machine (< 8 min); falls back
#                                            # to --dry, saying so, when no GPU is visible
#
# On a GPU machine that has the checkout but not the package's dependencies: copy this folder into
# the checkout under an ignored name, e.g. .gpu/ (echo /.gpu/ >> .git/info/exclude; echo /wheels/ >>
# .git/info/exclude), bring the wheels folder along, and run `bash .gpu/gpu_check.sh` (allow 9 minutes).
# Results: $OUT/fwd.json, $OUT/e2e.json, $OUT/gpu_check.log; the summary table is printed last.
#
# Environment: PYTHON (default python3, or .venv/bin/python for --dry when it exists), WHEELS
# (default ./wheels, else ./.whl), OUT (default /tmp/gpu_check_out), TOTAL_BUDGET (450 s for the
# whole script), FWD_BUDGET (160 s), E2E_BUDGET (default: what TOTAL_BUDGET leaves, at most 300 s),
# E2E_SHAPE (256,512,512), COMPILE (1: try torch.compile in the variants).
set -u
REPO=$(pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYDIR=${PYDIR:-$HERE}; [ -f "$PYDIR/fwd_bench.py" ] || PYDIR=$HERE/gpu
MODE=${1:-run}
T0=$(date +%s)

if [ "$MODE" = "--build-wheels" ]; then
  DIR=${2:-wheels}
  mkdir -p "$DIR"
  PIP=${PIP:-"python3 -m pip"}
  # Python 3.12, manylinux x86_64, no dependencies resolved by pip: exactly the packages the GPU
  # image lacks (it has numpy, scipy, pandas, pyyaml, psutil,
  # tqdm, msgpack, cloudpickle, toolz, fsspec, click, jinja2, packaging, sortedcontainers, urllib3,
  # typing-extensions, nvidia-ml-py, cuda-core are there already).  Versions: the ones this
  # check was written against on the CPU (dask/distributed 2026.8.0, zarr 3.1.6, numcodecs 0.16.6).
  PKGS="dask==2026.8.0 distributed==2026.8.0 zarr==3.1.6 numcodecs==0.16.6 mrcfile==1.5.4 donfig
        crc32c google-crc32c partd locket tblib tornado zict starfile pytest pluggy iniconfig
        scikit-image==0.26.0 lazy-loader connected-components-3d==4.1.1 networkx imageio tifffile"
  # the last line: the simulator's tilt series and the block labelling (train_recipe.sh simulates its pools)
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$DIR" $PKGS \
      2>&1 | grep -v "is ignored" || true
  BYTES=$(cat "$DIR"/*.whl | wc -c)
  echo "wheels in $DIR: $(ls "$DIR"/*.whl | wc -l) files, $((BYTES / 1048576)) MiB ($BYTES bytes)"
  [ "$BYTES" -lt $((60 * 1048576)) ] && echo "size OK (< 60 MiB)" || { echo "TOO LARGE (>= 60 MiB)"; exit 1; }
  echo "Requires-Dist of the carried wheels (extras and markers dropped), to compare with the image:"
  for w in "$DIR"/*.whl; do
    unzip -p "$w" '*.dist-info/METADATA' 2>/dev/null | grep '^Requires-Dist' | grep -v 'extra ==' \
      | sed 's/Requires-Dist: //; s/[ ;<>=!~(\[].*//'
  done | sort -u | tr '\n' ' '; echo
  exit 0
fi

OUTDIR=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUTDIR"
LOG=$OUTDIR/gpu_check.log
exec > >(tee -a "$LOG") 2>&1
echo "== gpu_check: repo $REPO, scripts $PYDIR, out $OUTDIR, $(date -u +%FT%TZ)"

DRY=0
[ "$MODE" = "--dry" ] && DRY=1
if [ -z "${PYTHON:-}" ]; then
  if [ $DRY = 1 ] && [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
if [ $DRY = 0 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! "$PYTHON" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "!! NO CUDA GPU visible (nvidia-smi or torch.cuda): falling back to the CPU dry run; no GPU numbers will be produced"
    DRY=1
    [ -x "$REPO/.venv/bin/python" ] && PYTHON=$REPO/.venv/bin/python
  fi
fi

# ---- 1. packages the machine lacks, from carried wheels (no network there)
if ! "$PYTHON" -c "import dask, distributed, zarr, numcodecs, mrcfile" 2>/dev/null; then
  WHEELS=${WHEELS:-$REPO/wheels}
  [ -d "$WHEELS" ] || WHEELS=$REPO/.whl
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    SITE=/tmp/cryodet_site
    echo "== installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$WHEELS"/*.whl || echo "!! pip install from $WHEELS failed"
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "!! dask/distributed/zarr/numcodecs/mrcfile missing and no wheels in $WHEELS (bash gpu_check.sh --build-wheels)"
  fi
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
"$PYTHON" - <<'EOF' || { echo "!! imports failed: cannot continue"; exit 2; }
import importlib, sys
mods = ["torch", "numpy", "scipy", "pandas", "dask", "distributed", "zarr", "numcodecs", "mrcfile", "yaml", "psutil", "cryodet_dask"]
vers = {}
for m in mods:
    vers[m] = getattr(importlib.import_module(m), "__version__", "?")
try:
    import dask_cuda; vers["dask_cuda"] = dask_cuda.__version__
except Exception as exc:
    vers["dask_cuda"] = f"not importable ({type(exc).__name__})"
import torch
print("python", sys.version.split()[0], "|", ", ".join(f"{k} {v}" for k, v in vers.items()))
print("cuda available:", torch.cuda.is_available(), "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,utilization.gpu --format=csv
echo "== cores $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg), setup took $(( $(date +%s) - T0 )) s"

if [ $DRY = 0 ]; then  # the GPU numerics tests (skipped without a GPU): TF32 / bf16 / CPU against strict fp32
  echo "== tests/test_gpu.py"
  timeout 110 "$PYTHON" -m pytest -q -s -p no:cacheprovider "$REPO/tests/test_gpu.py" 2>&1 | tee "$OUTDIR/test_gpu.log" | tail -12
fi
WORK=${WORK:-/tmp/gpu_check_work}
mkdir -p "$WORK"
if [ $DRY = 1 ]; then
  echo "== DRY RUN (CPU): tiny sizes, checks that every step runs; the numbers mean nothing"
  "$PYTHON" "$PYDIR/e2e.py" --prepare --work "$WORK/dry" --shape 32,64,64 --synthetic --out "$OUTDIR/e2e.json" || echo "!! tomogram failed"
  timeout 300 "$PYTHON" "$PYDIR/fwd_bench.py" --device cpu --halo 4 --chunks 8 --warmup 1 --repeats 1 --budget 120 \
      --variant-chunk 8 --copy-side 32 --out "$OUTDIR/fwd.json" || echo "!! fwd_bench failed rc=$?"
  timeout 600 "$PYTHON" "$PYDIR/e2e.py" --work "$WORK/dry" --shape 32,64,64 --synthetic --device cpu \
      --budget 500 --only ${DRY_LAYOUTS:-A,G,B,C,E,F} --cpu-workers 1 --out "$OUTDIR/e2e.json" || echo "!! e2e failed rc=$?"
else
  E2E_SHAPE=${E2E_SHAPE:-256,512,512}
  TOTAL=${TOTAL_BUDGET:-450}   # seconds for the whole script; the e2e part gets what is left
  echo "== 2. tomogram $E2E_SHAPE (simulated at half size, tiled)"
  timeout 120 "$PYTHON" "$PYDIR/e2e.py" --prepare --work "$WORK" --shape "$E2E_SHAPE" --out "$OUTDIR/e2e.json" \
      || echo "!! simulate failed: e2e uses smoothed noise"
  [ -f "$WORK/tomo.mrc" ] || timeout 60 "$PYTHON" "$PYDIR/e2e.py" --prepare --synthetic --work "$WORK" \
      --shape "$E2E_SHAPE" --out "$OUTDIR/e2e.json"
  FWD=${FWD_BUDGET:-160}
  echo "== 3. forward throughput (budget $FWD s), at $(( $(date +%s) - T0 )) s"
  CFLAG=""; [ "${COMPILE:-1}" = 1 ] && CFLAG="--compile"
  timeout $(( FWD + 40 )) "$PYTHON" "$PYDIR/fwd_bench.py" --budget "$FWD" $CFLAG \
      --tomogram "$WORK/tomo.mrc" --out "$OUTDIR/fwd.json" || echo "!! fwd_bench ended rc=$?"
  E2E=${E2E_BUDGET:-$(( TOTAL - ($(date +%s) - T0) - 25 ))}
  [ "$E2E" -gt 300 ] && E2E=300
  [ "$E2E" -lt 40 ] && E2E=40   # at least the first layout
  echo "== 4. detect end to end (budget $E2E s), at $(( $(date +%s) - T0 )) s"
  timeout $(( E2E + 30 )) "$PYTHON" "$PYDIR/e2e.py" --work "$WORK" --shape "$E2E_SHAPE" \
      --budget "$E2E" --out "$OUTDIR/e2e.json" || echo "!! e2e ended rc=$?"
fi
"$PYTHON" "$PYDIR/summary.py" "$OUTDIR/fwd.json" "$OUTDIR/e2e.json"
echo "== gpu_check done in $(( $(date +%s) - T0 )) s; load $(cut -d' ' -f1-3 /proc/loadavg)"
