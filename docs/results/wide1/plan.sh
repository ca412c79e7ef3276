#!/usr/bin/env bash
# The `wide` corpus (the default's 16,000 training sentences plus 16,000 read by the fast voices) on one GPU
# machine's 16 cores, beside stage 0, then stage 1 on it: the build time, and stage 1's dev WER against recipe5's at
# the same steps (the default corpus; docs/results/recipe5/stage1_log.csv). The ~16 device-minutes left after the
# machine's start and setup had no room for stage 2 and the decodings. Run in the background (setsid) from the
# repository root after the setup calls; poll with ../recipe5/poll.sh (L=$HOME/wide1). As run (2026-12-06) its prep
# converted only tiny.en, so stage 0 failed at once and was started by hand (s0b.log); prep converts the base encoder
# too since (it and the other shared lines now come from ../common.sh). `wide` has been the default size since that
# day, so today the same run is SIZE=default.
L=${L:-$HOME/wide1}; SIZE=${SIZE:-wide}
source "$(dirname "$0")/../common.sh"  # stamp, run, corpus; prep
corpus $SIZE &
run s0 train.py --stage 0 $X $X0
wait  # the corpus
( while sleep 20; do cp checkpoints/stage1_log.csv $L/ 2>/dev/null; done ) &  # stage 1's dev WER as it comes
copier=$!
run s1 train.py --stage 1 --size $SIZE $X $X12
kill $copier
cp checkpoints/stage*_log.csv $L/ 2>/dev/null
stamp "all done"; touch $L/ALL_DONE
