#!/usr/bin/env bash
# What the last device minutes allowed after plan2's stage 2 failed to start (its environment was not loaded):
# stage 2 at half its steps (2,300 of 4,600: a complete, shorter schedule), then every split decoded at once,
# the Whisper baselines beside. Not the recipe; its numbers compare decoding settings on one model.
set -u
cd "$(dirname "$0")/../../.."
source .device/bin/env.sh || exit 1
L=$HOME/r5; PY=python3
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local name=$1; shift; local t=$(date +%s)
  $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name $(( $(date +%s) - t ))s"; }
rm -f $L/ALL_DONE; stamp "plan3 starts"
export OMP_NUM_THREADS=2
W="decode.py --ckpt none --no-compile --out $L/whisper"
run w-test $W --eval test --baseline tiny.en base &
run w-real $W --eval real --baseline tiny.en base &
run w-modern $W --eval modern --baseline tiny.en base &
run w-unseen $W --eval test-unseen-voice --baseline tiny.en &
run s2-half train.py --stage 2 --steps 2300
cp checkpoints/stage*_log.csv $L/ 2>/dev/null
D="decode.py --ckpt checkpoints/stage2.pt --no-compile"
for s in dev test test-unseen-voice real modern; do
  run $s-K15S4 $D --eval $s --out $L/K15S4 &
  run $s-K5S8 $D --eval $s -K 5 -S 8 --out $L/K5S8 &
done
run dev-K15S4-keep $D --eval dev --keep-repeats --out $L/K15S4-keep &
run dev-K5S8-keep $D --eval dev -K 5 -S 8 --keep-repeats --out $L/K5S8-keep &
run test-K15S4-keep $D --eval test --keep-repeats --out $L/K15S4-keep &
wait
stamp "all done"; touch $L/ALL_DONE
