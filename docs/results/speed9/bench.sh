#!/usr/bin/env bash
# The speed benchmark of the current code with nothing else on the GPU, when the session's device time could not
# cover a training run: a `default`-shaped model trained one step per stage on the small corpus (its timings are
# the trained model's shapes; its transcripts are not text), timed on the small corpus's training clips, which
# hold enough of each length bucket. Run in the background (setsid) from the repository root after the setup
# calls; poll with ../recipe5/poll.sh (L=$HOME/s9, flag BENCH_DONE).
set -u
cd "$(dirname "$0")/../../.."
if [ -d $HOME/site ]; then source .device/bin/env.sh || exit 1; fi
L=${L:-$HOME/s9}; mkdir -p $L; PY=${PY:-python3}; CK=${CK:-checkpoints/s9}; XB=${XB:-}
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local name=$1; shift; local t=$(date +%s)
  $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name $(( $(date +%s) - t ))s"; }
stamp "start $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null) $(nproc --all) cores"
run corpus data.py --size small
for s in 0 1 2; do run s$s train.py --stage $s --size small --steps 1 --out-dir $CK ${XS:-}; done
run bench -m tools.bench --ckpt $CK/stage2.pt --split train --size small --out $L/bench $XB
stamp "bench done"; touch $L/BENCH_DONE
