#!/usr/bin/env bash
# The one-GPU recipe as the README types it (no flags), on a fresh GPU machine, with Whisper-tiny.en and
# Whisper-base decoding the same audio. The commands are the README's; two of them only start side by side:
# `python data.py` (CPU) and `python train.py --stage 0` (GPU; it reads the text and Whisper-base's weights,
# built first by `prep`). Then every split is decoded at once, without compiling (--no-compile: the same tokens
# up to fused-kernel rounding, no minutes of compilation), with the two decoding settings compared on dev
# (K=15 S=4 and K=5 S=8), each also without dropping repeated words on dev.
# Run in the background (setsid) from the repository root after the setup calls.
# CPU dry run: L=/tmp/r5 SIZE=small X="--device cpu --size small" X0="--preset tiny --steps 3 --batch-size 4" \
#   X12="--steps 3 --batch-size 4" XD="--device cpu --limit 4" bash docs/results/recipe5/plan.sh
set -u
cd "$(dirname "$0")/../../.."
[ -d $HOME/site ] && source .device/bin/env.sh  # the GPU machine (setup.sh installed there)
L=${L:-$HOME/r5}; mkdir -p $L; PY=${PY:-python3}; SIZE=${SIZE:-default}
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
export OMP_NUM_THREADS=2
D="decode.py --ckpt checkpoints/stage2.pt --no-compile"
for s in dev test test-unseen-voice real modern; do
  B=""; case $s in test|real|modern) B="--baseline tiny.en base";; test-unseen-voice) B="--baseline tiny.en";; esac
  run $s-K15S4 $D --eval $s $B --out $L/K15S4 $XD &
  run $s-K5S8 $D --eval $s -K 5 -S 8 --out $L/K5S8 $XD &
done
run dev-K15S4-keep $D --eval dev --keep-repeats --out $L/K15S4-keep $XD &
run dev-K5S8-keep $D --eval dev -K 5 -S 8 --keep-repeats --out $L/K5S8-keep $XD &
wait
stamp "all done"; touch $L/ALL_DONE
