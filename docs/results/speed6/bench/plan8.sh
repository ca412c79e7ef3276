#!/usr/bin/env bash
# Issue #15, the benchmark again with the trained default model's encoder shape. The `default` preset names
# Whisper-base, but its EncoderConfig is tiny.en's shape until train.py reads the Whisper checkpoint's dims, so the
# untrained checkpoints of ../../speed5/plan.sh and plan7.sh had a tiny-shaped encoder (384 x 4 layers) where the trained model has
# base's (512 x 6). Here: the `test` split alone (as before), two untrained `default` checkpoints (base-shaped
# and tiny-shaped encoder), then `decode.py --bench` of the current code (base), the previous code be1c1ee (base),
# the current code (tiny, to show the difference in one sitting) and the current code at -K 5 -S 8 (base).
# As run (2026-11-27, commit cb2f910): H100, BENCHES unset, then new-base twice more by hand with --repeats 10
# (python3 decode.py --ckpt $HOME/p8/untrained-base.pt --bench --repeats 10: bench-new-base10.log, -10b.log);
# H200: BENCHES='new-base-1 new-base-2 prev-base' EXTRA='--repeats 10' L=$HOME/p9 (bench/h200).
# (On the H100 the loop below was four explicit lines, the same commands; the preset then had tiny.en's encoder
# shape, so "tiny" took the preset's config: EncoderConfig() is the same dims.)
# That H100 run's fourth bench (K5S8-base) wrote no "done" line to progress.log (its explicit line had no stamp);
# it ran from 20:51:29 to 20:52:59, before "all done".
# CPU dry run: DEV='--device cpu' EXTRA='--repeats 1 --bench-batch 2 --limit 4' PRESET=tiny L=/tmp/p8 bash .device/bin/plan8.sh
set -u
cd "$(dirname "$0")/../.."
[ -f .device/bin/env.sh ] && source .device/bin/env.sh
L=${L:-$HOME/p8}; mkdir -p $L; PY=${PY:-python3}; DEV=${DEV:-}; EXTRA=${EXTRA:---repeats 5}; PRESET=${PRESET:-default}
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
stamp start
$PY - > $L/split.log 2>&1 <<'PYEOF' || stamp "FAILED split"
import time, data
from tools import tinyspeech as T
t = time.time()
root = data.corpus_dir("default"); root.mkdir(parents=True, exist_ok=True)
plans = T.plan_corpus(data.SIZES["default"], 0)
utts = T.synth_split("test", plans["test"], T.available_voices(), root, "default", 0, None)
T.write_manifest(utts, root / "test.tsv")
data.whisper_checkpoint("tiny.en")
print(f"test: {len(utts)} utterances, {sum(u.seconds for u in utts):.0f} s, built in {time.time() - t:.0f} s")
PYEOF
$PY - $L $PRESET > $L/ckpt.log 2>&1 <<'PYEOF' || stamp "FAILED ckpt"
import sys, torch, whisfusion as W
L, preset = sys.argv[1], sys.argv[2]
for name, enc in [("base", W.EncoderConfig(n_audio_state=512, n_audio_head=8, n_audio_layer=6)),
                  ("tiny", W.EncoderConfig())]:  # EncoderConfig's defaults are tiny.en's dims
    torch.manual_seed(0)
    cfg = W.WhisfusionConfig.from_dict(W.PRESETS[preset].to_dict())
    cfg.encoder = enc  # base: Whisper-base's dims, what train.py reads from the base checkpoint
    W.save_model(f"{L}/untrained-{name}.pt", W.build_model(cfg))
    print(name, cfg.encoder)
PYEOF
stamp "split, ckpt done"
mkdir -p $L/prev && tar -xf .device/prev/prev.tar -C $L/prev && ln -sfn "$(pwd)/data" $L/prev/data
# one bench per name, in order: <code>-<encoder>[-<tag>]; K5S8-* is the current code at -K 5 -S 8
for b in ${BENCHES:-new-base prev-base new-tiny K5S8-base}; do
  enc=$(echo $b | cut -d- -f2); dir=.; args=""
  case $b in prev-*) dir=$L/prev;; K5S8-*) args="-K 5 -S 8";; esac
  (cd $dir && $PY decode.py --ckpt $L/untrained-$enc.pt --bench $EXTRA $args --out $L/$b $DEV > $L/bench-$b.log 2>&1) || stamp "FAILED $b"
  stamp "bench $b done"
done
stamp "all done"; touch $L/ALL_DONE
