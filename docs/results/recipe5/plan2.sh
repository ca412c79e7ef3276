#!/usr/bin/env bash
# Taken over from plan.sh during stage 1 (the H100 machine's time was short): the Whisper baselines decode now,
# beside training, and after stage 2 the Whisfusion decodings run without them. Same commands otherwise.
set -u
cd "$(dirname "$0")/../../.."
source .device/bin/env.sh
L=$HOME/r5; PY=python3
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local name=$1; shift; local t=$(date +%s)
  $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name $(( $(date +%s) - t ))s"; }
stamp "plan2 takes over"
export OMP_NUM_THREADS=2
W="decode.py --ckpt none --no-compile --out $L/whisper"
run w-test $W --eval test --baseline tiny.en base &
run w-real $W --eval real --baseline tiny.en base &
run w-modern $W --eval modern --baseline tiny.en base &
run w-unseen $W --eval test-unseen-voice --baseline tiny.en &
while pgrep -f "train.py --stage 1" > /dev/null; do sleep 2; done
stamp "end s1 (seen by plan2)"
run s2 train.py --stage 2
cp checkpoints/stage*_log.csv $L/ 2>/dev/null
D="decode.py --ckpt checkpoints/stage2.pt --no-compile"
for s in dev test test-unseen-voice real modern; do
  run $s-K15S4 $D --eval $s --out $L/K15S4 &
  run $s-K5S8 $D --eval $s -K 5 -S 8 --out $L/K5S8 &
done
run dev-K15S4-keep $D --eval dev --keep-repeats --out $L/K15S4-keep &
run dev-K5S8-keep $D --eval dev -K 5 -S 8 --keep-repeats --out $L/K5S8-keep &
wait
stamp "all done"; touch $L/ALL_DONE
