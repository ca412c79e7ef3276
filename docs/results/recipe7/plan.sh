#!/usr/bin/env bash
# NOT YET RUN. The one-GPU recipe on the `default` corpus and on the `wide` one side by side, on a 2-GPU machine
# (one lane per GPU), so that the lever is judged within one run: the same stage 0, and the default's training
# utterances are the exact audio of wide's first 16,000 (wide's plan and voices begin with the default's), so the
# `wide` corpus is built once (all cores, beside stage 0) and `default` is made from it (its manifests, wide's
# first 16,000 training rows, the audio folders linked). Each lane: stage 1, stage 2, the decodings in two waves
# of six (an 80 GB card holds six); the Whisper baselines on GPU 0 beside the default lane's stage 1. Wide's stage 1
# holds twice the default's feature caches (29.3 GiB in fp16 on the H200 of wide1, whose stage 1 was not watched
# for its peak): on an 80 GB H100, an estimated ~70 GB at its peak. The commands are the README's
# (plus --size wide, --out-dir, and --no-compile for decoding). Estimated on 2 H100s (32 cores): wide corpus ~3.5
# min beside stage 0, stage 1 ~10 min (wide's feature caches are twice the size), stage 2 ~5.5 min, decoding ~2 min.
# Run in the background (setsid) from the repository root after the setup calls; poll with ../recipe5/poll.sh
# (L=$HOME/r7). CPU dry run (passed 2026-12-06, 5.5 min on 2 cores; afterwards delete checkpoints/default,
# checkpoints/wide and, on a machine that had no default corpus, data/tinyspeech/default):
#   L=/tmp/r7 WIDE=small NTRAIN=300 X="--device cpu" X0="--preset tiny --steps 3 --batch-size 4" \
#   X12="--steps 3 --batch-size 4" XD="--device cpu --limit 4" PY=.venv/bin/python bash docs/results/recipe7/plan.sh
L=${L:-$HOME/r7}; WIDE=${WIDE:-wide}; NTRAIN=${NTRAIN:-16000}
source "$(dirname "$0")/../common.sh"  # stamp, run, corpus; prep
corpus $WIDE &
CUDA_VISIBLE_DEVICES=0 run s0 train.py --stage 0 --out-dir checkpoints/default $X $X0
mkdir -p checkpoints/wide && cp checkpoints/default/stage0.pt checkpoints/wide/
wait  # the corpus
run derive -c "
import json, os, data
wide, default = data.corpus_dir('$WIDE'), data.corpus_dir('default')
if default.exists():  # never write over a corpus of its own (nor a dry run's small manifests over real audio)
    raise SystemExit(f'{default} exists: move it away first')
default.mkdir(parents=True)
for split in data.SPLITS:
    head, *rows = (wide / f'{split}.tsv').read_text().splitlines(keepends=True)
    if split == 'train':  # the default's own sentences, by id (a failed clip leaves a gap, never a fast row in)
        rows = [r for r in rows if int(r.split('\\t')[0].split('-')[1]) < $NTRAIN]
    (default / f'{split}.tsv').write_text(head + ''.join(rows))
    os.symlink(wide / split, default / split)
hours = {s: round(sum(u.seconds for u in data.read_manifest(default / f'{s}.tsv')) / 3600, 3) for s in data.SPLITS}
(default / 'done.json').write_text(json.dumps(hours)); print(hours)"
export OMP_NUM_THREADS=2
lane() {  # lane GPU NAME SIZE: stages 1-2 and the decodings of one corpus
  local gpu=$1 name=$2 size=$3 ck=checkpoints/$2
  export CUDA_VISIBLE_DEVICES=$gpu
  run $name-s1 train.py --stage 1 --size $size --out-dir $ck $X $X12
  run $name-s2 train.py --stage 2 --size $size --out-dir $ck $X $X12
  cp $ck/stage*_log.csv $L/$name/ 2>/dev/null
  local D="decode.py --ckpt $ck/stage2.pt --no-compile"
  for s in dev test test-unseen-voice real modern; do run $name-$s-K15S4 $D --eval $s --out $L/$name/K15S4 $XD & done
  run $name-dev-K5S8 $D --eval dev -K 5 -S 8 --out $L/$name/K5S8 $XD &
  wait
  for s in test test-unseen-voice real modern; do run $name-$s-K5S8 $D --eval $s -K 5 -S 8 --out $L/$name/K5S8 $XD & done
  run $name-dev-K15S4-keep $D --eval dev --keep-repeats --out $L/$name/K15S4-keep $XD &
  wait
  stamp "lane $name done"
}
mkdir -p $L/default $L/wide
( W="decode.py --ckpt none --no-compile --out $L/whisper --size default"; export CUDA_VISIBLE_DEVICES=0
  run w-test $W --eval test --baseline tiny.en base $XD & run w-real $W --eval real --baseline tiny.en base $XD &
  run w-modern $W --eval modern --baseline tiny.en base $XD & run w-unseen $W --eval test-unseen-voice --baseline tiny.en $XD &
  wait ) &
( lane 0 default default ) &
( lane 1 wide $WIDE ) &
wait
stamp "all done"; touch $L/ALL_DONE
