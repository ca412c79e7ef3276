#!/usr/bin/env bash
# NOT YET RUN: the next run of the one-GPU recipe (the corpus with modern English), planned from recipe5's lessons:
# the Whisper baselines decode beside stage 1 (they need only the corpus), and our decodings run in two waves of
# six after stage 2 (thirteen side by side ran out of an 80 GB card). The commands are the README's, no flags
# except --no-compile (the same tokens up to fused-kernel rounding, no minutes of compilation). Estimated on one
# H100: prep 15 s, corpus 5 min beside stage 0, stage 1 9 min, stage 2 (2,300 steps) 5.5 min, decoding 1.5 min.
# Run in the background (setsid) from the repository root after the setup calls; poll with ../recipe5/poll.sh
# (L=$HOME/r6). CPU dry run: L=/tmp/r6 SIZE=small X="--device cpu --size small" X0="--preset tiny --steps 3
#   --batch-size 4" X12="--steps 3 --batch-size 4" XD="--device cpu --limit 4" bash docs/results/recipe6/plan.sh
# (dry run last passed 2026-12-06, 3.5 min on 2 cores, with no checkpoints/stage*.pt left from an earlier run).
# The same recipe on the `wide` corpus: SIZE=wide X="--size wide" bash docs/results/recipe6/plan.sh (decode.py
# takes the corpus from the checkpoint).
# Afterwards, on the development machine, from the unpacked r6.tgz: the long-clip and rare-word tables,
#   .venv/bin/python docs/results/longclips/analyse.py r6/K15S4/test.csv+r6/whisper/test.csv r6/K5S8/test.csv
#   .venv/bin/python docs/results/rarewords/analyse.py --modern r6/K15S4/test.csv+r6/whisper/test.csv
L=${L:-$HOME/r6}; SIZE=${SIZE:-default}
source "$(dirname "$0")/../common.sh"  # stamp, run, corpus; prep
corpus $SIZE &
run s0 train.py --stage 0 $X $X0
wait  # the corpus
export OMP_NUM_THREADS=2
W="decode.py --ckpt none --no-compile --out $L/whisper --size $SIZE"
run w-test $W --eval test --baseline tiny.en base $XD &
run w-real $W --eval real --baseline tiny.en base $XD &
run w-modern $W --eval modern --baseline tiny.en base $XD &
run w-unseen $W --eval test-unseen-voice --baseline tiny.en $XD &
run s1 train.py --stage 1 $X $X12
run s2 train.py --stage 2 $X $X12
cp checkpoints/stage*_log.csv $L/ 2>/dev/null
wait  # the baselines
D="decode.py --ckpt checkpoints/stage2.pt --no-compile"
for s in dev test test-unseen-voice real modern; do run $s-K15S4 $D --eval $s --out $L/K15S4 $XD & done
run dev-K5S8 $D --eval dev -K 5 -S 8 --out $L/K5S8 $XD &
wait
stamp "wave 1 done"
for s in test test-unseen-voice real modern; do run $s-K5S8 $D --eval $s -K 5 -S 8 --out $L/K5S8 $XD & done
run dev-K15S4-keep $D --eval dev --keep-repeats --out $L/K15S4-keep $XD &
run dev-K5S8-keep $D --eval dev -K 5 -S 8 --keep-repeats --out $L/K5S8-keep $XD &
wait
stamp "all done"; touch $L/ALL_DONE
