"""Plots for the README from the logs in docs/results (python docs/make_plots.py)."""
import csv
import json
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

R = Path(__file__).parent / "results"


def rows(name):
    with open(R / name) as f:
        return list(csv.DictReader(f))


fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
for (name, label), color in zip([("run-c/stage0_log.csv", "stage 0 (text, ELBO)"),
                                 ("run-c/stage1_log.csv", "stage 1 (adapter)"),
                                 ("run-c/stage2_reg_log.csv", "stage 2 (full, dropout + time masks)"),
                                 ("run-c/stage2_plain_log.csv", "stage 2 (full, no regularisers)"),
                                 ("run-a/stage2_log.csv", "run A: stage 2 (adapter + LoRA r=16)")],
                                ["C0", "C1", "C3", "C4", "C2"]):
    rs = rows(name)
    a.plot([float(r["elapsed_s"]) for r in rs], [float(r["loss"]) for r in rs], color=color, label=label)
    dev = [r for r in rs if r["dev_wer"]]
    if dev:
        b.plot([float(r["elapsed_s"]) for r in dev], [float(r["dev_wer"]) for r in dev], "o-", color=color,
               label=label)
a.set(xlabel="seconds (NVIDIA H200, run C; LoRA: run A)", ylabel="training loss", title="loss per stage")
b.set(xlabel="seconds (NVIDIA H200)", ylabel="dev WER % (PDD K=15 S=4, 64 utts)", title="dev WER")
a.legend(fontsize=8), b.legend(fontsize=8)
fig.tight_layout()
fig.savefig(R / "training_curves.png", dpi=110)

fig, ax = plt.subplots(figsize=(6.5, 4))
runs = [("run-c/bench.json", "run C model, graph, MBR", "-"),
        ("perf/bench_final_k15.json", "final code, graph, untrained weights", "--")]
for path, label, style in runs:
    bench = json.loads((R / path).read_text())
    rs = bench["latency_batch1"]
    buckets = [r["bucket"] for r in rs]
    ax.plot(buckets, [r["whisfusion_graph_ms"] for r in rs], "o" + style, color="C0", label=f"Whisfusion K=15 S=4 ({label})")
    ax.plot(buckets, [r["whisper_tiny_en_ms"] for r in rs], "s" + style, color="C1", label=f"Whisper-tiny.en greedy ({label.split(',')[0]})")
ax.plot(buckets, [r["whisfusion_eager_ms"] for r in rs], "^:", color="C2", label="Whisfusion eager, no CUDA graph (final code)")
ax.set(xlabel="audio length", ylabel="batch-1 latency, ms (median)", title=f"latency vs length, {bench['card']}",
       yscale="log")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(R / "latency_vs_length.png", dpi=110)
