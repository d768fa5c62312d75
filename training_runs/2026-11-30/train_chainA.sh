#!/bin/sh
# twohead: fine-tune the shipped two-head weights on the randomized pool
cd /work/train
COMMON="--pool pool_train --validation-pool pool_val --patch-size 48 --batch-size 4 --validation-batches 6 --lr 5e-4 --lr-schedule cosine --invert 0.5 --patience 100 --threads 1 --snapshot-every 2"
./run.sh -q train out/twohead.pt --init init/twohead.pt --epochs 20 --steps-per-epoch 50 --max-minutes 85 $COMMON
