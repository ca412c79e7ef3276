"""Scores decode.drop_repeats offline: the per-utterance CSVs of earlier runs hold each chosen transcript, and
drop_repeats is applied to the chosen transcript, so dropping the repeats of a CSV's hypotheses gives what
decode.py now writes for the same model and decoding. Run from the repository root:
    python docs/results/recipe5/offline_repeats.py"""
import csv
import sys
from pathlib import Path

sys.path.insert(0, ".")
import decode  # noqa: E402

RUNS = {"recipe4 (1 GPU, the README recipe), K=15 S=4": "docs/results/recipe4/default*",
        "recipe3 G (1 GPU), K=15 S=4": "docs/results/recipe3/G", "recipe3 G (1 GPU), K=15 S=8": "docs/results/recipe3/G-S8",
        "torchrun4 (4 GPUs), K=15 S=4": "docs/results/torchrun4/S4",
        "torchrun4 (4 GPUs), K=15 S=8": "docs/results/torchrun4/S8",
        "torchrun4 (4 GPUs), K=5 S=8": "docs/results/torchrun4/K5S8"}
print("| model, decoding | split | WER % as run | repeated % | WER % with repeats dropped | repeated % |")
print("|---|---|---|---|---|---|")
for name, pattern in RUNS.items():
    for split in ("dev", "test", "test-unseen-voice", "real"):
        files = sorted(Path(".").glob(f"{pattern}/{split}.csv"))
        if not files:
            continue
        rows = list(csv.DictReader(open(files[0])))
        refs, hyps = [r["reference"] for r in rows], [r["whisfusion_hyp"] for r in rows]
        dropped = [decode.drop_repeats(h) for h in hyps]
        print(f"| {name} | {split} | {decode.wer(refs, hyps)[0]:.2f} | {decode.repeated_word_rate(hyps):.2f} | "
              f"{decode.wer(refs, dropped)[0]:.2f} | {decode.repeated_word_rate(dropped):.2f} |")
