#!/bin/sh
cd /work/train
COMMON="--pool pool_train --validation-pool pool_val --patch-size 48 --batch-size 4 --validation-batches 6 --lr 5e-4 --lr-schedule cosine --invert 0.5 --patience 100 --threads 1 --snapshot-every 2"
./run.sh -q train out/centernet.pt --init init/centernet.pt --epochs 10 --steps-per-epoch 50 --max-minutes 42 $COMMON
./run.sh -q train out/segnet.pt --init init/segnet.pt --epochs 10 --steps-per-epoch 50 --max-minutes 42 $COMMON
