"""
The speed benchmark: batch-1 latency per length bucket and batched throughput next to Whisper-tiny.en, each
measurement repeated and interleaved with Whisper's, on a GPU with nothing else running.

    python -m tools.bench --ckpt checkpoints/stage2.pt
"""
import argparse
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
import whisfusion as W
from decode import (DecodeOptions, GraphedPDD, decode_batch, frame_counts, fresh_path, load_for_decoding,
                    use_cuda_graph)


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


def log_mel_batch(audios: list[np.ndarray], device="cpu") -> torch.Tensor:
    """`data.log_mel` of each waveform, (B, n_mels=80, 3000) on `device`, as one batch: the waveforms are padded or
    trimmed to 30 s on the CPU, sent to the device in one copy, and go through one STFT and one mel product
    (clip by clip, most of the time goes to small copies that each wait for the GPU).
    Each clip is floored at its own maximum - 8 (80 dB), as `data.log_mel` does: whisper.log_mel_spectrogram of a
    whole batch would take the batch's maximum."""
    from whisper.audio import HOP_LENGTH, N_FFT, N_SAMPLES, mel_filters
    on_gpu = str(device).startswith("cuda")
    x = torch.zeros(len(audios), N_SAMPLES, pin_memory=on_gpu)  # pinned: the copy need not wait for the GPU
    for i, a in enumerate(audios):
        x[i, :min(len(a), N_SAMPLES)] = torch.from_numpy(a[:N_SAMPLES])
    x = x.to(device, non_blocking=on_gpu)
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT, device=device), return_complex=True)
    log_spec = (mel_filters(device, 80) @ stft[..., :-1].abs() ** 2).clamp(min=1e-10).log10()  # (B, 80, 3000)
    log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (log_spec + 4.0) / 4.0


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
    if vocab_ids is not None:  # the 51,864-way projection and fill cut to the text's ids
        small = restrict_output(copy.deepcopy(model), vocab_ids)
        default = "graph" if graph else "eager"
        name = f"{default}, {len(small.head_ids)}-token output"
        variants[name] = (small, opts, GraphedPDD(small, opts) if graph else None)
        pairs.append((name, default))  # against the path it changes

    def mels(batch):  # log-mel on the device, one batch, inside the timed region for both systems
        return log_mel_batch(batch, device)

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
        W.atomic_write(out_json, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
        print(f"wrote {out_json}")
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


def restrict_output(model, ids):
    """Cut the output layer to the Whisper ids `ids` (sot and eot always kept), in place: the 51,864-way
    projection and its greedy fill shrink to len(ids) columns. Over those ids the logits are the full head's,
    so the greedy token is the same wherever the full head's choice is among them; the confidence is a softmax
    over fewer tokens (a little higher). The input embedding is untouched: every id can still be read."""
    tok = data.get_tokenizer()
    keep = torch.tensor(sorted(set(ids) | {tok.sot, tok.eot}), device=model.head_ids.device)
    rows = keep if model.id_to_row is None else model.id_to_row[keep]  # head rows of those ids
    rows = rows[rows >= 0]  # a model already restricted (decoder.vocab) keeps only ids it has
    head = torch.nn.Linear(model.lm_head.in_features, len(rows), bias=False)
    head.weight = torch.nn.Parameter(model.lm_head.weight[rows].detach().clone(), requires_grad=False)
    model.lm_head, model.head_ids = head, model.head_ids[rows]
    return model


def split_token_ids(split: str, size: str = "default") -> set[int]:
    """Every Whisper id in a split's transcripts (as `data.make_canvas` tokenizes them)."""
    tok = data.get_tokenizer()
    return {i for u in data.load_split(split, size) for i in tok.encode(" " + data.normalize_text(u.text))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="checkpoints/stage2.pt", help="trained Whisfusion checkpoint")
    p.add_argument("--split", default="test", help="split whose utterances are timed")
    p.add_argument("--size", default=None, choices=list(data.SIZES), help="TinySpeech corpus (default: the "
                   "checkpoint's)")
    p.add_argument("--limit", type=data.positive_int, default=None, help="time only the first N utterances")
    p.add_argument("--candidates", "-K", type=data.bounded_int(1, 256), default=DecodeOptions.candidates, help="K")
    p.add_argument("--steps", "-S", type=data.bounded_int(1, 64), default=DecodeOptions.steps, help="S")
    p.add_argument("--no-compile", action="store_true", help="record the CUDA graphs without torch.compile")
    p.add_argument("--repeats", type=data.bounded_int(1, 1000), default=10, help="timed runs per measurement")
    p.add_argument("--batch", type=data.bounded_int(1, 1024), default=64, help="batch size for RTFx")
    p.add_argument("--out", default="results", help="folder for bench.json")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    if problem := data.device_problem(args.device) or data.path_problem(args.out, "--out"):
        p.error(problem)
    opts = DecodeOptions(candidates=args.candidates, steps=args.steps, compile=not args.no_compile)
    try:
        model, ckpt = load_for_decoding(args.ckpt, args.device, with_ckpt=True)
        size = args.size or (ckpt.get("args") or {}).get("size") or "default"
        try:  # + a row with the output layer cut to the training text's tokens
            vocab = split_token_ids("train", size)
        except (FileNotFoundError, data.DataError) as e:  # no usable training split here: no such row
            print(f"no restricted-output row in the benchmark: {e}")
            vocab = None
        Path(args.out).mkdir(parents=True, exist_ok=True)
        bench(model, data.load_whisper("tiny.en", args.device), data.load_split(args.split, size)[:args.limit], opts,
              args.device, fresh_path(Path(args.out) / "bench.json"), args.repeats, args.batch, vocab)
    except (data.AudioError, FileNotFoundError, ValueError, data.DataError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:
        raise SystemExit(f"error: {data.os_error(e, f'--out {args.out}')}") from None


if __name__ == "__main__":
    main()
