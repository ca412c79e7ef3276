#!/usr/bin/env bash
# The one-GPU recipe as the README types it (no flags), on a fresh GPU machine, with Whisper-tiny.en and
# Whisper-base decoding the same audio. The commands are the README's; two of them only start side by side:
# `python data.py` (CPU) and `python train.py --stage 0` (GPU; it reads the books' text and Whisper-base's
# weights, built first by `prep`). Then decoding with the defaults (compiled graphs) and, without compiling
# (--no-compile: the same tokens up to fused-kernel rounding, no minutes of compilation), the other splits and
# decoding settings. Run in the background (setsid) from the repository root after the setup calls.
# CPU dry run: L=/tmp/r4 SIZE=numbers X="--device cpu --size numbers" X0="--preset tiny --steps 3 --batch-size 4" \
#   X12="--steps 3 --batch-size 4" XD="--device cpu --limit 4" bash docs/results/recipe4/plan.sh
set -u
cd "$(dirname "$0")/../../.."
[ -d $HOME/site ] && source .device/bin/env.sh  # the GPU machine (setup.sh installed there)
L=${L:-$HOME/r4}; mkdir -p $L; PY=${PY:-python3}; SIZE=${SIZE:-default}
X=${X:-}; X0=${X0:-}; X12=${X12:-}; XD=${XD:-}  # the dry run's flags; none on the GPU
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local name=$1; shift; local t=$(date +%s)
  $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name $(( $(date +%s) - t ))s"; }
stamp "start $(git rev-parse --short HEAD 2>/dev/null) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null) $(nproc --all) cores"
run prep -c "from tools import text, weights; text.ensure(); print(weights.ensure('tiny.en'), weights.ensure('base'))"
( t=$(date +%s); $PY data.py --size $SIZE > $L/corpus.log 2>&1 || stamp "FAILED corpus"; stamp "corpus done $(( $(date +%s) - t ))s" ) &
run s0 train.py --stage 0 $X $X0
wait  # the corpus
run s1 train.py --stage 1 $X $X12
run s2 train.py --stage 2 $X $X12
cp checkpoints/stage*_log.csv $L/ 2>/dev/null
export OMP_NUM_THREADS=4
D="decode.py --ckpt checkpoints/stage2.pt"
run test $D --eval test --baseline tiny.en --out $L/default $XD &  # the README's command, compiled graphs
run test-nc $D --eval test --baseline base --no-compile --out $L/default-nc $XD &
run unseen $D --eval test-unseen-voice --baseline tiny.en --no-compile --out $L/default $XD &
run real $D --eval real --baseline tiny.en base --no-compile --out $L/default $XD &
run dev $D --eval dev --no-compile --out $L/default $XD &
wait
stamp "defaults done"
for s in test test-unseen-voice real dev; do
  run $s-S8 $D --eval $s -S 8 --no-compile --out $L/S8 $XD &
  run $s-K5S8 $D --eval $s -K 5 -S 8 --no-compile --out $L/K5S8 $XD &
done
wait
stamp "all done"; touch $L/ALL_DONE
