#!/usr/bin/env bash
# After plan.sh, with nothing else on the GPU: `decode.py --bench` of the model plan.sh trained (a trained
# `default` model with the compiled graphs: real text on the canvas, so candidate selection reads text), then the
# same with -K 5 -S 8. Run in the background (setsid) from the repository root; poll.sh $T BENCH_DONE waits for it.
set -u
cd "$(dirname "$0")/../../.."
[ -d $HOME/site ] && source .device/bin/env.sh
L=${L:-$HOME/s8}; PY=${PY:-python3}; CK=${CK:-checkpoints/s8}; DEV=${DEV:-}; EXTRA=${EXTRA:---repeats 10}
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
$PY decode.py --ckpt $CK/stage2.pt --bench $EXTRA --out $L/bench $DEV > $L/bench.log 2>&1 || stamp "FAILED bench"
stamp "bench done"
$PY decode.py --ckpt $CK/stage2.pt --bench -K 5 -S 8 $EXTRA --out $L/bench-k5s8 $DEV > $L/bench-k5s8.log 2>&1 || stamp "FAILED bench-k5s8"
stamp "bench-k5s8 done"; touch $L/BENCH_DONE
