#!/usr/bin/env bash
# RUN 2026-12-06 on one NVIDIA H100 (16 cores) from a fresh machine, commit 989836e, as
#   env SIZE=wide X="--size wide" L=$HOME/r6w setsid bash docs/results/recipe6/plan.sh
# on the `wide` corpus of that commit, which this run made the default (the same plan: 16,000 sentences read by all
# voices, 16,000 by the fast ones); today `bash docs/results/recipe6/plan.sh` runs the same recipe. Logs, CSVs and
# transcripts: run/ (progress bars cut to their last line); analysis.txt and voices.txt come from them. The run
# decoded K=15 S=4 with no -K/-S (the default then); the lines below name it, as K=5 S=8 is the default now.
# The plan: the Whisper baselines decode beside stage 1 (they need only the corpus), and our decodings run in two
# waves of six after stage 2 (thirteen side by side ran out of an 80 GB card). The commands are the README's, no
# flags except --no-compile (the same tokens up to fused-kernel rounding, no minutes of compilation). Poll with
# ../recipe5/poll.sh (L=$HOME/r6). CPU dry run: L=/tmp/r6 SIZE=small X="--device cpu --size small" X0="--preset tiny
#   --steps 3 --batch-size 4" X12="--steps 3 --batch-size 4" XD="--device cpu --limit 4" bash docs/results/recipe6/plan.sh
# Afterwards, on the development machine: the long-clip and rare-word tables (analysis.txt), and WER by voice,
#   .venv/bin/python docs/results/longclips/analyse.py R/K15S4/test.csv+R/whisper/test.csv R/K5S8/test.csv
#   .venv/bin/python docs/results/rarewords/analyse.py --modern R/K15S4/test.csv+R/whisper/test.csv \
#       R/K15S4/modern.csv+R/whisper/modern.csv
#   .venv/bin/python docs/results/recipe6/voices.py > docs/results/recipe6/voices.txt
# (R = docs/results/recipe6/run).
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
for s in dev test test-unseen-voice real modern; do run $s-K15S4 $D --eval $s -K 15 -S 4 --out $L/K15S4 $XD & done
run dev-K5S8 $D --eval dev -K 5 -S 8 --out $L/K5S8 $XD &
wait
stamp "wave 1 done"
for s in test test-unseen-voice real modern; do run $s-K5S8 $D --eval $s -K 5 -S 8 --out $L/K5S8 $XD & done
run dev-K15S4-keep $D --eval dev -K 15 -S 4 --keep-repeats --out $L/K15S4-keep $XD &
run dev-K5S8-keep $D --eval dev -K 5 -S 8 --keep-repeats --out $L/K5S8-keep $XD &
wait
stamp "all done"; touch $L/ALL_DONE
