"""
The speed benchmark and the decoding ablations (`python decode.py --bench` / `--ablate SPLIT` run these):
batch-1 latency per length bucket and batched throughput next to Whisper-tiny.en, each measurement repeated and
interleaved with Whisper's; WER, repeated words and latency for each decoding variant.
"""
import copy
import functools
import json
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import data
from decode import (DecodeOptions, GraphedPDD, autocast, canvas_len, decode_batch, frame_counts, generate,
                    repeated_word_rate, restrict_output, transcribe_features, use_cuda_graph, wer)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(fns: dict, device, repeats=10, warmup=2) -> dict[str, list[float]]:
    """Wall times in ms, `repeats` per function after `warmup` runs each, taken in turns (a, b, c, a, b, c,
    ...): a drift of the machine (clocks, temperature, a neighbour) hits every system alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(1000 * (time.perf_counter() - t0))
    return times


def spread(xs) -> dict:
    """Median, quartiles, min and max of a list of numbers (rounded for the tables)."""
    q1, med, q3 = np.percentile(xs, [25, 50, 75])
    return dict(median=round(float(med), 2), q1=round(float(q1), 2), q3=round(float(q3), 2),
                min=round(float(min(xs)), 2), max=round(float(max(xs)), 2))


def time_it(fn, device, repeats=10, warmup=3) -> float:
    """Median wall time of fn() in ms, after warm-up."""
    return statistics.median(time_interleaved({"fn": fn}, device, repeats, warmup)["fn"])


def bench(model, wmodel, utts, opts, device, out_json=None, repeats=10, batch_size=64, vocab_ids=None):
    """Batch-1 latency per length bucket and RTFx at batch 64, ours next to Whisper-tiny.en in one process,
    each measurement repeated and interleaved with Whisper's (`time_interleaved`); medians and spreads.
    `vocab_ids` (the training text's Whisper ids) adds our default path with the output layer cut to them."""
    import whisper
    audios = {u.id: data.load_audio(u.audio) for u in utts}
    wopts = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=str(device).startswith("cuda"))
    graph = use_cuda_graph(device, opts)
    variants = {"eager": (model, replace(opts, cuda_graph=False), None)}  # name: (model, options, CUDA graph)
    pairs = [("graph", "eager"), ("graph, full canvas", "graph")]  # same computation; the canvas's effect
    if graph:
        variants["graph"] = (model, opts, GraphedPDD(model, opts))
        if opts.compile:  # the same graphs recorded without torch.compile: what compiling saves, and what it moves
            plain = replace(opts, compile=False)
            variants["graph, not compiled"] = (model, plain, GraphedPDD(model, plain))
            pairs.append(("graph", "graph, not compiled"))
        if opts.canvas != "full":  # the model's whole canvas: what the sized canvas saves, and how flat it is
            full = replace(opts, canvas="full")
            variants["graph, full canvas"] = (model, full, GraphedPDD(model, full))
    if vocab_ids is not None:  # --output-vocab train: the 51,864-way projection and fill cut to the text's ids
        small = restrict_output(copy.deepcopy(model), vocab_ids)
        default = "graph" if graph else "eager"
        name = f"{default}, {len(small.head_ids)}-token output"
        variants[name] = (small, opts, GraphedPDD(small, opts) if graph else None)
        pairs.append((name, default))  # against the path it changes

    def mels(batch):  # log-mel on the device, one batch, inside the timed region for both systems
        return data.log_mel_batch(batch, device)

    def ours(m, o, graphed):
        return lambda batch: decode_batch(m, mels(batch), frame_counts(batch), o, graphed)

    systems = {name: ours(*v) for name, v in variants.items()}
    systems["whisper"] = lambda batch: [r.text for r in whisper.decode(wmodel, mels(batch), wopts)]
    batch = list(audios.values())[:batch_size]
    batch = (batch * math.ceil(batch_size / len(batch)))[:batch_size]
    texts = {name: fn(batch) for name, fn in systems.items()}
    agree = {f"{a} vs {b}": f"{sum(x == y for x, y in zip(texts[a], texts[b]))}/{len(batch)}"
             for a, b in pairs if a in texts}
    card = torch.cuda.get_device_name() if str(device).startswith("cuda") else "cpu"
    d, e = model.cfg.decoder, model.cfg.encoder  # the shapes timed: an untrained model must have the trained one's
    shapes = dict(decoder=f"{d.n_layer} x {d.n_embd}", encoder=f"{e.n_audio_layer} x {e.n_audio_state}",
                  whisper=model.cfg.whisper)
    result = dict(card=card, model=shapes, options=opts.__dict__, output_vocab=len(model.head_ids), repeats=repeats,
                  latency_batch1=bench_latency(systems, audios, device, repeats),
                  throughput=bench_throughput(systems, batch, device, repeats), same_transcripts=agree)
    print_bench(result)
    if out_json:
        Path(out_json).write_text(json.dumps(result, indent=2))
    return result


def bench_latency(systems: dict, audios: dict, device, repeats: int) -> list[dict]:
    """Batch 1, audio in, text out: per length bucket, 5 utterances x `repeats` interleaved runs per system."""
    rows = []
    for lo, hi in [(0, 5), (5, 10), (10, 20), (20, 30)]:
        ids = [k for k, a in audios.items() if lo <= len(a) / data.SAMPLE_RATE < hi][:5]
        if not ids:
            continue
        pooled = {name: [] for name in systems}
        for i in ids:
            for name, ms in time_interleaved({n: functools.partial(fn, [audios[i]]) for n, fn in systems.items()},
                                             device, repeats).items():
                pooled[name] += ms
        rows.append(dict(bucket=f"{lo}-{hi} s", n=len(ids), ms={name: spread(ms) for name, ms in pooled.items()}))
    return rows


def bench_throughput(systems: dict, batch: list, device, repeats: int) -> dict:
    """RTFx (seconds of audio per second of wall time) for one batch, per system, and each of ours over
    Whisper's, taken repeat by repeat (the two runs of one turn saw the same machine state)."""
    seconds = sum(len(a) for a in batch) / data.SAMPLE_RATE
    ms = time_interleaved({name: functools.partial(fn, batch) for name, fn in systems.items()}, device, repeats)
    rtfx = {name: [1000 * seconds / t for t in ts] for name, ts in ms.items()}
    ratio = {name: spread([a / b for a, b in zip(r, rtfx["whisper"])]) for name, r in rtfx.items() if name != "whisper"}
    return dict(batch=len(batch), audio_seconds=round(seconds, 1), rtfx={n: spread(r) for n, r in rtfx.items()},
                ratio_to_whisper=ratio)


def print_bench(r: dict):
    o = r["options"]
    m = r["model"]
    print(f"\nbenchmark on {r['card']}: decoder {m['decoder']}, encoder {m['encoder']} (layers x width; the config "
          f"names Whisper {m['whisper']}); K={o['candidates']} S={o['steps']} canvas={o['canvas']} "
          f"select={o['select']} compile={o['compile']} output vocabulary {r['output_vocab']}; {r['repeats']} "
          f"interleaved repeats each")
    names = list(r["latency_batch1"][0]["ms"]) if r["latency_batch1"] else []
    print("batch-1 latency, ms: median (IQR)")
    print(f"{'bucket':10s} {'n':>3s} " + " ".join(f"{n:>22s}" for n in names) + f" {'speed-up':>9s}")
    ours = "graph" if "graph" in names else "eager"
    for row in r["latency_batch1"]:
        m = row["ms"]
        cells = " ".join(f"{m[n]['median']:8.1f} ({m[n]['q1']:.1f}-{m[n]['q3']:.1f})".rjust(22) for n in names)
        print(f"{row['bucket']:10s} {row['n']:3d} {cells} {m['whisper']['median'] / m[ours]['median']:9.2f}")
    if len(r["latency_batch1"]) > 1:  # flat in length? each of ours: the longest bucket's median over the shortest's
        for name in [n for n in names if n != "whisper"]:
            first, last = (row["ms"][name]["median"] for row in (r["latency_batch1"][0], r["latency_batch1"][-1]))
            print(f"{name} latency, {r['latency_batch1'][-1]['bucket']} vs {r['latency_batch1'][0]['bucket']}: "
                  f"{100 * (last / first - 1):+.1f} %")
    t = r["throughput"]
    print(f"RTFx at batch {t['batch']} ({t['audio_seconds']} s of audio): median [min-max]")
    for name, s in t["rtfx"].items():
        vs = t["ratio_to_whisper"].get(name)
        ratio = f"   {vs['median']:.2f}x Whisper [{vs['min']:.2f}-{vs['max']:.2f}]" if vs else ""
        print(f"  {name:20s} {s['median']:8.0f} [{s['min']:.0f}-{s['max']:.0f}]{ratio}")
    print(f"identical transcripts (batch of {t['batch']}): {r['same_transcripts']}")


def ablate(model, split, device, size="default", limit=None, latency_utts=8, out_json=None):
    """One table: WER and batch-1 decoding latency (encoded audio in, text out) for each decoding variant."""
    utts = data.load_split(split, size)[:limit]
    audios = [data.load_audio(u.audio) for u in utts]
    refs = [u.text for u in utts]
    mel = torch.stack([data.log_mel(a) for a in audios])
    n_frames = frame_counts(audios)
    with torch.no_grad(), autocast(device):
        feats = torch.cat([model.embed_audio(mel[i:i + 32].to(device)) for i in range(0, len(mel), 32)])
    base = DecodeOptions()
    variants = [("default", base)] + \
        [(f"K={k}", replace(base, candidates=k)) for k in (1, 5, 30)] + \
        [(f"S={s}", replace(base, steps=s)) for s in (2, 8)] + \
        [("K=5, S=8", replace(base, candidates=5, steps=8))] + \
        [("duplicate re-masking", replace(base, dedup=True)),
         ("S=8 + duplicate re-masking", replace(base, steps=8, dedup=True)),
         ("low-confidence re-masking", replace(base, remask="confidence")),
         ("low-confidence, S=8", replace(base, remask="confidence", steps=8)),
         ("low-confidence, S=8, dedup", replace(base, remask="confidence", steps=8, dedup=True)),
         ("confidence selection (paper)", replace(base, select="confidence")),
         ("MBR selection", replace(base, select="mbr")),
         ("adaptive canvas", replace(base, adaptive=True))]
    variants = [(name, opts) for name, opts in variants if name == "default" or opts != base]
    rows = []
    print(f"\nablation on {split} ({len(utts)} utterances), {torch.cuda.get_device_name() if str(device).startswith('cuda') else 'cpu'}")
    print(f"{'variant':30s} {'corpus WER %':>13s} {'mean-utt WER %':>15s} {'repeated %':>11s} {'decode ms':>10s}")
    for name, opts in variants:
        hyps = transcribe_features(model, feats, n_frames, opts)
        c, m, _ = wer(refs, hyps)
        rep = repeated_word_rate(hyps)

        def one(i):
            with autocast(device):
                ctx = model.audio_context(feats[i:i + 1], n_frames[i:i + 1])
                return generate(model, ctx, opts, length=canvas_len(model, n_frames[i:i + 1], opts))
        ms = statistics.median(time_it(lambda: one(i), device, 5, 2) for i in range(min(latency_utts, len(utts))))
        rows.append(dict(variant=name, corpus_wer=round(c, 2), mean_utt_wer=round(m, 2), repeated_words=round(rep, 2),
                         decode_ms=round(ms, 2)))
        print(f"{name:30s} {c:13.2f} {m:15.2f} {rep:11.2f} {ms:10.2f}")
    if out_json:
        Path(out_json).write_text(json.dumps(rows, indent=2))
    return rows
