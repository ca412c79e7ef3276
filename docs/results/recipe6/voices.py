"""WER by voice on recipe6's `test` and `modern` (per-utterance CSVs of run/), with each utterance's voice taken
from the corpus plan (voices are drawn deterministically from the plan and the installed voices; this machine has
the GPU machine's ten). Output: voices.txt. Run from the repository root:
    .venv/bin/python docs/results/recipe6/voices.py"""
import csv
import sys
from collections import defaultdict
from pathlib import Path

import jiwer

sys.path.insert(0, ".")
import data  # noqa: E402
import decode  # noqa: E402
from tools import tinyspeech  # noqa: E402

plans = tinyspeech.plan_corpus(data.SIZES["default"], seed=0)
voices = tinyspeech.available_voices()


def voice_only(job):
    item, voice, out_dir, seed = job
    return dict(item, audio=f"{out_dir}/{item['id']}.flac", seconds=1.0, voice=voice.name)


tinyspeech._synth_item = voice_only
R = "docs/results/recipe6/run"
for split in ("test", "modern"):
    voice = {u.id: u.voice for u in tinyspeech.synth_split(split, plans[split], voices, Path("/tmp/voices"),
                                                           "default", 0, 1)}
    rows = {}
    for sub, col in (("K15S4", "whisfusion_hyp"), ("whisper", "whisper-tiny.en_hyp")):
        for r in csv.DictReader(open(f"{R}/{sub}/{split}.csv")):
            rows.setdefault(r["id"], {"ref": r["reference"]})[sub] = r[col]
    by = defaultdict(lambda: defaultdict(list))
    for uid, r in rows.items():
        for sub in ("K15S4", "whisper"):
            by[voice[uid]][sub].append((decode.normalize(r["ref"]), decode.normalize(r[sub])))
    print(f"\n{split}: corpus WER % by voice (utterances)   Whisfusion K=15 S=4   Whisper-tiny.en")
    for v in sorted(by):
        w = {sub: 100 * jiwer.wer(*map(list, zip(*by[v][sub]))) for sub in by[v]}
        print(f"  {v:22s} ({len(by[v]['K15S4']):3d})   {w['K15S4']:6.2f}   {w['whisper']:6.2f}")
