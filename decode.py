"""
Parallel Diffusion Decoding (PDD, the paper's decoding) and evaluation next to Whisper.

    python decode.py --ckpt checkpoints/stage2.pt a.wav b.flac       # one transcript per file
    python decode.py --ckpt checkpoints/stage2.pt --eval test --baseline tiny.en

PDD fills a whole canvas in S parallel steps for K candidates at once: step s re-masks a share r_s of every
canvas (random positions; 100 % at step 0), predicts all masked positions in one forward pass over the K x L
batch, and keeps the greedy fills; then one candidate is chosen (`generate`, `select`). Read from the top; below
the "Plumbing" line are the same loop with its speed-ups (`generate_fast`, checked against `generate` by a test),
the CUDA graphs, checkpoint loading, evaluation and the command line. The benchmark: `python -m tools.bench`.
"""
from __future__ import annotations  # type hints may name classes defined further down (GraphedPDD)

import argparse
import csv
import functools
import io
import json
import math
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import data
import whisfusion as W


@dataclass(frozen=True)
class DecodeOptions:
    # K = 5 with S = 8: about the work of the paper's K = 15 with S = 4, and fewer errors on dev and test
    candidates: int = 5  # K: independent canvases per utterance, decoded in one batch (paper: 15)
    steps: int = 8  # S: forward passes, whatever the transcript length (paper: 4)
    ratios: tuple = (1.0, 0.9, 0.85, 0.8)  # share of each canvas re-masked at step s: the paper's schedule, and
    # 0.7 for any step past it (also the paper's: the lowest mask ratio stage 2 trains on)
    select: str = "mbr"  # "mbr": the candidate closest to all others, or "confidence" (the paper's rule)
    drop_repeats: bool = True  # a word said twice in a row is written once (`drop_repeats`)
    seed: int = 0  # the random re-masking is drawn from this seed: the same audio always gives the same text
    canvas: str = "audio"  # "audio": canvas length from the audio's duration (`canvas_len`); "full": canvas_len
    cuda_graph: bool = True  # on a GPU, replay encoder + K/V + all S steps as one CUDA graph (`GraphedPDD`)
    compile: bool = True  # inside those graphs, the encoder and decoder passes through torch.compile (`compiled`)


# The canvas sized to the audio. Training pads every transcript with end-of-text to the model's canvas_len (128),
# but a 5 s clip holds about 20 tokens, and every decoding step pays for all K x L positions. Speech has a top
# speed, so the duration bounds the transcript's length: the canvas is cut to that bound.
TOKENS_PER_SECOND = 8.0  # the bound; TinySpeech training transcripts: at most 6.3 Whisper tokens per second
CANVAS_BUCKET = 16  # canvas lengths are multiples of this: few shapes, so the CUDA graphs are reused


def canvas_len(model: W.Whisfusion, n_frames, opts: DecodeOptions) -> int:
    """The canvas for a batch whose longest clip has max(n_frames) encoder frames (50 per second): room for
    TOKENS_PER_SECOND tokens a second plus the start token and one end-of-text, rounded up to a multiple of
    CANVAS_BUCKET, at most the model's canvas_len (which opts.canvas == "full" always takes)."""
    full = model.cfg.decoder.canvas_len
    if opts.canvas == "full":
        return full
    seconds = int(torch.as_tensor(n_frames).max()) / data.FRAMES_PER_SECOND
    need = math.ceil(TOKENS_PER_SECOND * seconds) + 2
    return min(full, CANVAS_BUCKET * math.ceil(need / CANVAS_BUCKET))


def canvas_groups(model, n_frames, opts: DecodeOptions) -> list[tuple[int, torch.Tensor]]:
    """A batch split by canvas length: [(L, indices of the utterances that get it)], shortest canvas first. One
    long clip then does not stretch the whole batch's canvas."""
    lengths = [canvas_len(model, n, opts) for n in n_frames.tolist()]
    return [(L, torch.tensor([i for i, x in enumerate(lengths) if x == L])) for L in sorted(set(lengths))]


def draw_noise(opts: DecodeOptions, L: int, device):
    """The random numbers of PDD, (S, K, L), from a generator seeded with opts.seed. Every utterance uses the
    same K rows, so its transcript does not depend on which batch it is in, nor where (eager or graphed, batch
    1 or 64, grouped by canvas length or not); a shorter canvas uses the first positions of each row."""
    g = torch.Generator(device=device).manual_seed(opts.seed)
    return torch.rand(opts.steps, opts.candidates, L, generator=g, device=device)


def remask_ratio(opts: DecodeOptions, s: int) -> float:
    return opts.ratios[s] if s < len(opts.ratios) else 0.7


@torch.no_grad()
def generate(model: W.Whisfusion, ctx: W.AudioContext, opts: DecodeOptions = DecodeOptions(),
             length: int | None = None, noise=None):
    """The paper's PDD for B utterances whose audio is already encoded: K candidates each, S parallel steps.

    Args:
        model: a trained Whisfusion (eval mode).
        ctx: the audio context of B utterances (`Whisfusion.audio_context`): per-block K/V, computed once and
            read by every step and candidate.
        opts: K (candidates), S (steps), the re-masking ratios r_s, the seed of the random re-masking.
        length: canvas length L (`canvas_len`), default the model's canvas_len.
        noise: `draw_noise`'s (S, K, >= L) uniform numbers; position i of candidate k is re-masked at step s
            when noise[s, k, i] < r_s.
    Returns:
        tokens (B, K, L) Whisper ids, and scores (B, K): each candidate's mean confidence over its text.
    """
    cfg, tok = model.cfg.decoder, data.get_tokenizer()
    B, K, L = ctx.kv[0][0].shape[0], opts.candidates, length or cfg.canvas_len
    device = ctx.kv[0][0].device
    noise = draw_noise(opts, cfg.canvas_len, device) if noise is None else noise
    noise = noise[:, :, :L].repeat(1, B, 1)  # (S, B*K, L): row b*K + k is candidate k of utterance b
    ctx = ctx.repeat(K)  # the K candidates of an utterance read its one copy of the audio K/V
    # 1. K canvases per utterance, all [MASK] after the start token
    canvas = torch.full((B * K, L), cfg.mask_id, device=device)  # (B*K, L)
    canvas[:, 0] = tok.sot
    for s in range(opts.steps):
        # 2. re-mask a random share r_s of every canvas (all of it at step 0); the start token stays
        masked = noise[s] < remask_ratio(opts, s)  # (B*K, L)
        masked[:, 0] = False
        # 3. predict every masked position at once, from the audio and the tokens kept
        logits = model(torch.where(masked, cfg.mask_id, canvas), ctx)  # (B*K, L, n_out)
        # 4. fill them with the most likely token; the confidence is read at every position, as the paper does
        conf, pred = logits.float().softmax(-1).max(-1)  # (B*K, L) each
        canvas = torch.where(masked, model.head_ids[pred], canvas)  # head rows -> Whisper ids
    # 5. a candidate's score: mean confidence over its start token and text, the eot padding left out
    keep = (canvas != tok.eot).float()
    scores = (conf * keep).sum(1) / keep.sum(1).clamp_min(1)
    return canvas.view(B, K, L), scores.view(B, K)


def select(tokens, scores, opts: DecodeOptions) -> list[str]:
    """One transcript per utterance: the most confident candidate, or the minimum-Bayes-risk one
    (the candidate with the smallest summed word edit distance to the other candidates), its repeated words
    dropped (`drop_repeats`)."""
    out, text_of = [], {}  # candidates often repeat one another: each distinct canvas is decoded once
    for b, rows in enumerate(tokens.tolist()):
        texts = []
        for key in map(tuple, rows):
            if key not in text_of:
                text_of[key] = data.canvas_to_text(key)
            texts.append(text_of[key])
        if opts.select == "mbr" and len(texts) > 1:
            risk = mbr_risk([t.split() for t in texts])
            best = min(range(len(texts)), key=lambda k: (risk[k], -scores[b, k].item()))
        else:
            best = int(scores[b].argmax())
        out.append(drop_repeats(texts[best]) if opts.drop_repeats else texts[best])
    return out


NUMBER_WORDS = {w for n in range(1000) for w in data.spell_number(n).split()} | {"oh", "thousand", "million"}


def drop_repeats(text: str) -> str:
    """Each word equal to the word before it is dropped: "the the cat" -> "the cat". Every position of the
    canvas is filled in parallel, and two neighbours that both hear the same word can both write it; the model
    cannot see the double when it decides, since they are filled in the same step. This stutter is the known
    failure of non-autoregressive decoders, and grows with the transcript's length; real speech almost never
    repeats a word (2 in 10,000 words of `test`'s references), except in numbers ("dial one one nine"), which
    are kept. The model writes normalised words (lower case, no punctuation), so words compare as they are."""
    words = text.split()
    return " ".join(w for i, w in enumerate(words)
                    if i == 0 or w.lower() != words[i - 1].lower() or w.lower() in NUMBER_WORDS)


def mbr_risk(candidates: list[list[str]]) -> list[int]:
    """Each candidate's summed word edit distance to all candidates. Identical candidates (common) are scored
    once; the distances come from rapidfuzz (C++, installed with jiwer), same numbers as `edit_distance`."""
    from rapidfuzz.distance import Levenshtein
    count = Counter(tuple(c) for c in candidates)
    risk = {c: sum(n * Levenshtein.distance(c, o) for o, n in count.items()) for c in count}
    return [risk[tuple(c)] for c in candidates]


def edit_distance(a: list, b: list) -> int:
    """Word-level Levenshtein distance, written out (the reference that `mbr_risk`'s rapidfuzz call matches)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def frame_counts(audios) -> torch.Tensor:
    """(B,) encoder frames that hold audio, one per waveform."""
    return torch.tensor([data.n_audio_frames(len(a)) for a in audios])


def use_cuda_graph(device, opts: DecodeOptions) -> bool:
    return str(device).startswith("cuda") and opts.cuda_graph


def autocast(device):
    return torch.autocast("cuda", torch.bfloat16) if str(device).startswith("cuda") else nullcontext()


@torch.no_grad()
def transcribe_features(model, features, n_frames, opts=DecodeOptions(), batch_size=16) -> list[str]:
    """Encoder features (N, Ta, d) + frames that hold audio (N,) -> N transcripts, in batches of batch_size,
    each decoded in groups that share a canvas length (`canvas_groups`)."""
    out = []
    for i in range(0, len(features), batch_size):
        n = n_frames[i:i + batch_size]
        texts = [""] * len(n)
        for L, idx in canvas_groups(model, n, opts):
            with autocast(features.device):
                ctx = model.audio_context(features[i:i + batch_size][idx.to(features.device)], n[idx])
                tokens, scores = generate_fast(model, ctx, opts, length=L)
            for j, t in zip(idx.tolist(), select(tokens.cpu(), scores.cpu(), opts)):
                texts[j] = t
        out += texts
    return out


@torch.no_grad()
def decode_batch(model, mel, n_frames, opts=DecodeOptions(), graphed: GraphedPDD | None = None) -> list[str]:
    """Log-mel (B, n_mels, 3000) on the model's device + frames that hold audio (B,) -> B transcripts: with
    `graphed`, one CUDA graph per group of clips that share a canvas length; else eagerly.

    With graphs, no group is read back before the last one is launched, and nothing on the way waits for the
    GPU (every copy to it comes from pinned memory, `to_device`): the CPU turns the first group's candidates
    into text (`select`) while the GPU still decodes the later groups."""
    if graphed is None:
        with autocast(mel.device):
            feats = model.embed_audio(mel)
        return transcribe_features(model, feats, n_frames, opts, len(mel))
    launched = []  # (indices, tokens and scores on their way to the CPU, the event that says they arrived)
    for _, idx in canvas_groups(model, n_frames, opts):
        tokens, scores = graphed(mel[to_device(idx, mel.device)], n_frames[idx])
        launched.append((idx, *to_host(tokens, scores)))
    texts = [""] * len(mel)
    for idx, tokens, scores, done in launched:
        done.synchronize()  # this group's copy to the CPU has landed
        for j, t in zip(idx.tolist(), select(tokens, scores, opts)):
            texts[j] = t
    return texts


def has_speech(audio: np.ndarray) -> bool:
    """At least 0.1 s and audible (peak above -60 dBFS); anything else is transcribed as empty."""
    return len(audio) >= 1600 and float(np.abs(audio).max()) > 1e-3


@torch.no_grad()
def transcribe(model, audios: list[np.ndarray], opts=DecodeOptions(), batch_size=16) -> list[str]:
    """Waveforms (16 kHz float32) -> transcripts. Audio longer than the encoder window (30 s; 4 s for the cpu
    preset) is cut into windows of that length, transcribed, and joined in order."""
    device = next(model.parameters()).device
    window_s = min(data.MAX_SECONDS, model.cfg.encoder.n_audio_ctx / data.FRAMES_PER_SECOND)
    windows, owner = [], []
    for i, a in enumerate(audios):
        n_win = max(1, math.ceil(len(a) / (data.SAMPLE_RATE * window_s)))
        for w in range(n_win):
            chunk = a[int(w * data.SAMPLE_RATE * window_s):int((w + 1) * data.SAMPLE_RATE * window_s)]
            windows.append(chunk)
            owner.append(i)
    texts = [""] * len(windows)
    speech = [i for i, a in enumerate(windows) if has_speech(a)]
    speech.sort(key=lambda i: -len(windows[i]))  # longest first: a batch holds clips of similar lengths
    graphed = GraphedPDD(model, opts) if use_cuda_graph(device, opts) else None
    for i in range(0, len(speech), batch_size):
        chunk = [windows[j] for j in speech[i:i + batch_size]]
        mel = torch.stack([data.log_mel(a) for a in chunk]).to(device)
        hyps = decode_batch(model, mel, frame_counts(chunk), opts, graphed)
        for j, t in zip(speech[i:i + batch_size], hyps):
            texts[j] = t
    joined = [[] for _ in audios]
    for i, t in zip(owner, texts):
        if t:
            joined[i].append(t)
    return [" ".join(parts) for parts in joined]

# ----------------------------------------------------------------------------------------------------------
# Scoring and evaluation

_normalizer = None


def normalize(text: str) -> str:
    """The same rule on both sides, for us and for the Whisper baseline: first the corpus's own spelling
    (`data.normalize_text`: digits spelled out as the references are, "4.30" -> "four thirty", punctuation
    dropped), so that Whisper is not charged for writing numbers as digits; then Whisper's English normaliser."""
    global _normalizer
    if _normalizer is None:
        from whisper.normalizers import EnglishTextNormalizer
        _normalizer = EnglishTextNormalizer()
    return _normalizer(data.normalize_text(text))


def repeated_word_rate(texts: list[str]) -> float:
    """% of words (after normalisation) equal to the word before them: 0.02 % in the references of `test`."""
    words = [normalize(t).split() for t in texts]
    repeats = sum(a == b for w in words for a, b in zip(w, w[1:]))
    return 100.0 * repeats / max(1, sum(len(w) for w in words))


def wer(refs: list[str], hyps: list[str]) -> tuple[float, float, list[float]]:
    """(corpus WER, mean of per-utterance WERs, per-utterance WERs), in %, after normalisation."""
    import jiwer
    per, errors, words = [], 0, 0
    for r, h in zip(refs, hyps):
        r, h = normalize(r), normalize(h)
        n = len(r.split())
        e = jiwer.process_words(r, h).wer * n if n else float(len(h.split()) > 0)
        per.append(100.0 * e / max(n, 1))
        errors, words = errors + e, words + n
    return 100.0 * errors / max(words, 1), float(np.mean(per)), per

# ----------------------------------------------------------------------------------------------------------
# Plumbing (not needed to follow PDD): `generate` with its speed-ups, the CUDA-graph capture of the loop,
# loading a checkpoint, scoring against Whisper, the command line.

@torch.no_grad()
def generate_fast(model: W.Whisfusion, ctx: W.AudioContext, opts: DecodeOptions = DecodeOptions(),
                  length: int | None = None, noise=None, forward=None):
    """`generate` with the same tokens in less work (a test checks they agree):
    - while a step re-masks everything (step 0) the K candidates are still identical, so that step runs once
      per utterance and the candidates part ways at the first partial re-mask;
    - the confidence, a softmax over the vocabulary, is only read after the last step (random re-masking does
      not look at it), so the other steps take the argmax alone;
    - forward: the decoder pass to call, the model itself by default (`GraphedPDD` passes a compiled one)."""
    cfg, tok = model.cfg.decoder, data.get_tokenizer()
    B, K, L = ctx.kv[0][0].shape[0], opts.candidates, length or cfg.canvas_len
    device = ctx.kv[0][0].device
    noise = draw_noise(opts, cfg.canvas_len, device) if noise is None else noise  # (S, K, canvas_len)
    forward = model if forward is None else forward
    noise = noise[:, :, :L].repeat(1, B, 1)  # (S, B*K, L): row b*K + k is candidate k of utterance b
    canvas = torch.full((B, L), cfg.mask_id, device=device)  # (B, L): one canvas per utterance until step 1
    canvas[:, 0] = tok.sot
    conf = None
    for s in range(opts.steps):
        ratio = remask_ratio(opts, s)
        if canvas.shape[0] == B and ratio < 1.0:  # K candidates from here on: (B*K, L)
            canvas, ctx = W.repeat_rows(canvas, K), ctx.repeat(K)
        masked = noise[s, :canvas.shape[0]] < ratio  # (N, L), N = B or B*K
        masked[:, 0] = False
        logits = forward(torch.where(masked, cfg.mask_id, canvas), ctx)
        if s == opts.steps - 1:
            conf, pred = greedy_fill(logits)
        else:
            pred = logits.argmax(-1)
        canvas = torch.where(masked, model.head_ids[pred], canvas)
    if canvas.shape[0] == B:  # every step re-masked everything: K identical candidates
        canvas, conf = W.repeat_rows(canvas, K), W.repeat_rows(conf, K)
    keep = (canvas != tok.eot).float()
    scores = (conf * keep).sum(1) / keep.sum(1).clamp_min(1)
    return canvas.view(B, K, -1), scores.view(B, K)


def greedy_fill(logits):
    """logits (N, L, V) -> probability of the greedy token and the token, (N, L) each: softmax(-1).max(-1),
    computed as p(argmax) = 1 / sum_v exp(logit_v - max) with the sum in fp32. On a GPU torch.compile fuses
    this pass over the vocabulary into one reduction kernel instead of four that each read or write (N, L, V)."""
    return (_fused_greedy_fill() if logits.is_cuda else _greedy_fill)(logits)


def _greedy_fill(logits):
    top, pred = logits.max(-1)
    return (logits.float() - top[..., None].float()).exp().sum(-1).reciprocal(), pred


@functools.cache
def _fused_greedy_fill():
    return torch.compile(_greedy_fill, dynamic=True)


class GraphedPDD:
    """Encoder, K/V and the whole S-step PDD loop as one CUDA graph per input shape (GPU only).

    At batch 1 a decoding step is a few hundred small kernels whose launches, not their arithmetic, set the
    latency. A CUDA graph records them once and replays them in one launch; with opts.compile what it records
    are the kernels of the torch.compile'd audio side and decoder pass (`compiled`), fewer and fused. Shapes
    inside a graph are fixed, so the audio context is padded (and masked) to a multiple of `bucket` frames: one
    graph per batch size, context bucket and canvas length (`canvas_len`), each captured on first use. Same
    seed, same tokens as `generate` on the padded context (uncompiled; compiled, close to them: fused kernels
    round differently). A batch whose clips need different canvases: `decode_batch`."""

    said_compiling = False  # the notice that the first batch compiles: once per process

    def __init__(self, model: W.Whisfusion, opts: DecodeOptions, bucket: int = 250):  # 250 frames = 5 s: 6 graphs
        # per batch size cover 30 s, and a clip pays for at most 5 s of padding
        self.model, self.opts, self.bucket = model, opts, bucket
        self.graphs = {}  # (B, n_ctx, L) -> (graph, static inputs, static outputs)
        self.pool = None
        self.encode, self.forward = self._encode, model  # what each graph records: the audio side, the decoder pass
        if opts.compile:  # (torch.compile is lazy: nothing compiles before the first graph is captured)
            self.encode, self.forward = compiled(self._encode), compiled(model.forward)

    def n_ctx(self, n_frames) -> int:
        n_audio_ctx = self.model.cfg.encoder.n_audio_ctx
        return min(n_audio_ctx, self.bucket * math.ceil(int(n_frames.max()) / self.bucket))

    def _encode(self, mel, n_frames, n_ctx):
        return self.model.audio_context(self.model.embed_audio(mel), n_frames, n_ctx)

    def _body(self, mel, n_frames, noise, n_ctx, L):
        with torch.autocast("cuda", torch.bfloat16, cache_enabled=False):
            return generate_fast(self.model, self.encode(mel, n_frames, n_ctx), self.opts, L, noise, self.forward)

    @torch.no_grad()
    def __call__(self, mel, n_frames):
        """mel (B, n_mels, 3000) on the GPU, n_frames (B,) -> tokens (B, K, L), scores (B, K)."""
        B, n_ctx, L = mel.shape[0], self.n_ctx(n_frames), canvas_len(self.model, n_frames, self.opts)
        key = (B, n_ctx, L)
        if key not in self.graphs:  # the seeded noise is the same on every call: drawn once, kept in the graph
            if self.opts.compile and not GraphedPDD.said_compiling:
                GraphedPDD.said_compiling = True
                print("compiling the decoding passes with torch.compile (the first batch takes minutes, later "
                      "runs reuse Inductor's on-disk cache; --no-compile skips it)",
                      file=sys.stderr, flush=True)
            noise = draw_noise(self.opts, self.model.cfg.decoder.canvas_len, mel.device)
            static = dict(mel=mel.clone(), n_frames=n_frames.to(mel.device).clone(), noise=noise)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the graph (cuBLAS handles, autotuning)
                self._body(static["mel"], static["n_frames"], static["noise"], n_ctx, L)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.pool = self.pool or torch.cuda.graph_pool_handle()  # one memory pool shared by all graphs
            with torch.cuda.graph(graph, pool=self.pool):
                out = self._body(static["mel"], static["n_frames"], static["noise"], n_ctx, L)
            self.graphs[key] = (graph, static, out)
        graph, static, (tokens, scores) = self.graphs[key]
        static["mel"].copy_(mel)
        static["n_frames"].copy_(to_device(n_frames, mel.device))
        graph.replay()
        return tokens.clone(), scores.clone()


def compiled(fn):
    """torch.compile of a pass inside the CUDA graphs. What it fuses are the element-wise operations around the
    matrix products: RoPE, the residual additions, SwiGLU's product, the norms, Whisper's LayerNorm round trips
    to fp32 and GELUs (each a kernel of its own in eager PyTorch, reading and writing the whole activation); the
    matrix products and attention stay cuBLAS's and cuDNN's.

    A fused kernel would keep its intermediates in fp32 where eager PyTorch rounds each result to bf16;
    emulate_precision_casts makes it round them too. The numbers are still not eager PyTorch's bit for bit (the
    fused reductions and exp/erf are Inductor's; docs/speed.md gives the transcripts that move and the WER of a
    trained model either way). dynamic=True: one compilation for every batch size, canvas length and context
    bucket (a batch of one utterance is compiled apart), rather than one per shape. Past Dynamo's limit of
    compilations per function (8 by default) a pass would run eagerly inside the graph, silently: the bench's
    models (full and cut output layer, each with its batch-of-one and step-0 variants) come close, so it is 32."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    return torch.compile(fn, dynamic=True, options={"emulate_precision_casts": True})


def to_device(t, device):
    """A tensor on the GPU; from the CPU, copied from pinned memory without waiting. A copy from ordinary
    (pageable) memory waits for all the work queued on the GPU first: in `decode_batch` each launch then waited
    for the group before it."""
    if t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def to_host(*tensors):
    """Copies of GPU tensors into pinned CPU memory, started and not waited for, and a CUDA event that
    completes with them (wait on it before reading the copies)."""
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for h, t in zip(host, tensors):
        h.copy_(t, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return (*host, done)


def load_for_decoding(path, device, dtype=None, with_ckpt=False):
    """A trained checkpoint with its EMA weights (stage 2 keeps them) and LoRA merged into the base weights,
    in `dtype`: by default bf16 on a GPU (weights and activations: under autocast alone every step would re-cast
    the fp32 weights and carry an fp32 residual stream), fp32 on a CPU (which decodes without autocast).
    A stage-0 model (it has never heard audio) or one with non-finite weights is refused; an unfinished stage
    is decoded with a warning."""
    on_gpu = str(device).startswith("cuda")
    dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
    if not on_gpu and dtype != torch.float32:
        raise ValueError(f"decoding on {device} runs in fp32 only (no autocast there); got dtype {dtype}")
    model, ckpt = W.load_model(path, device)
    if ckpt.get("ema"):  # stage 2's averaged weights, copied into the parameters of those names
        model.load_state_dict(ckpt["ema"], strict=False)
    if problem := W.checkpoint_problem(path, ckpt, model, stages=(1, 2)):
        raise W.CheckpointError(problem)
    if note := W.unfinished_note(path, ckpt):
        data.warn(note)
    W.merge_lora(model)
    model = model.to(dtype).eval()
    return (model, ckpt) if with_ckpt else model


def whisper_transcribe(wmodel, audios, device, batch_size=16) -> list[str]:
    """openai-whisper greedy autoregressive decoding (the baseline), 30 s windows, no timestamps."""
    import whisper
    opts = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=str(device).startswith("cuda"))
    out = []
    for i in range(0, len(audios), batch_size):
        mel = torch.stack([data.log_mel(a) for a in audios[i:i + batch_size]]).to(device)
        out += [r.text for r in whisper.decode(wmodel, mel, opts)]
    return out


def evaluate(model, split, opts, device, out_csv=None, baselines=(), size="default", limit=None, show=0):
    """WER of our model (and of Whisper baselines) on one split; writes a per-utterance CSV."""
    from tqdm import tqdm
    utts = data.load_split(split, size)[:limit]
    audios = [data.load_audio(u.audio) for u in tqdm(utts, desc=f"load {split}")]
    refs = [u.text for u in utts]
    systems = {"whisfusion": lambda: transcribe(model, audios, opts)} if model is not None else {}
    for name in baselines:
        systems[f"whisper-{name}"] = lambda name=name: whisper_transcribe(data.load_whisper(name, device), audios,
                                                                          device)
    results, hyps_by, pers = {}, {}, {}
    for key, run in systems.items():  # each system decoded and scored once
        t0 = time.time()
        hyps_by[key] = run()
        corpus, mean_utt, pers[key] = wer(refs, hyps_by[key])
        results[key] = (corpus, mean_utt, repeated_word_rate(hyps_by[key]), time.time() - t0)
    if out_csv:  # written whole or not at all (W.atomic_write), the table first
        rows = [["id", "reference"] + [f"{k}_hyp" for k in hyps_by] + [f"{k}_wer" for k in hyps_by]]
        rows += [[u.id, u.text] + [hyps_by[k][i] for k in hyps_by] + [f"{pers[k][i]:.1f}" for k in hyps_by]
                 for i, u in enumerate(utts)]
        table = io.StringIO()
        csv.writer(table).writerows(rows)
        W.atomic_write(out_csv, lambda tmp: tmp.write_text(table.getvalue()))
        W.atomic_write(Path(out_csv).with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(
            {k: dict(corpus_wer=round(c, 2), mean_utt_wer=round(m, 2), repeated_words=round(r, 2), seconds=round(t, 1))
             for k, (c, m, r, t) in results.items()}, indent=2)))
        print(f"wrote {out_csv} and {Path(out_csv).with_suffix('.json').name}")
    print(f"\n{split}: {len(utts)} utterances, {sum(len(a) for a in audios) / data.SAMPLE_RATE / 60:.1f} min of audio")
    print(f"{'system':24s} {'corpus WER %':>13s} {'mean-utt WER %':>15s} {'repeated words %':>17s} {'time s':>8s}")
    for k, (c, m, r, t) in results.items():
        print(f"{k:24s} {c:13.2f} {m:15.2f} {r:17.2f} {t:8.1f}")
    show_pairs(refs, hyps_by, show)
    return results


def show_pairs(refs, hyps_by: dict, n: int):
    """Print the first n references with every system's hypothesis under it (--show N)."""
    for i in range(min(n, len(refs))):
        print(f"  ref{'':19s} {refs[i]}")
        for k, hyps in hyps_by.items():
            print(f"  {k:22s} {hyps[i]}{'' if normalize(hyps[i]) == normalize(refs[i]) else '   (differs)'}")


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="audio files to transcribe")
    p.add_argument("--ckpt", default="checkpoints/stage2.pt", help="trained Whisfusion checkpoint (none: score "
                   "only the --baseline models)")
    p.add_argument("--eval", default=None, help="split to score: train/dev/test/test-unseen-voice/modern/real, a "
                   "LibriSpeech folder or a .tsv manifest")
    p.add_argument("--size", default=None, choices=list(data.SIZES), help="TinySpeech corpus of --eval's split "
                   "(default: the one the checkpoint was trained on)")
    p.add_argument("--limit", type=data.positive_int, default=None, help="score only the first N utterances")
    p.add_argument("--show", type=data.nonneg_int, default=0, help="--eval: print N reference / hypothesis pairs")
    p.add_argument("--baseline", nargs="*", default=[], help="Whisper models decoded greedily on the same split "
                   "(tiny.en, base, or a .pt path)")
    p.add_argument("--out", default="results", help="folder for the per-utterance CSV and the JSON summary")
    p.add_argument("--candidates", "-K", type=data.bounded_int(1, 256), default=DecodeOptions.candidates,
                   help="K, candidates per utterance (the paper: 15)")
    p.add_argument("--steps", "-S", type=data.bounded_int(1, 64), default=DecodeOptions.steps, help="S, decoding "
                   "steps (the paper: 4)")
    p.add_argument("--select", choices=["confidence", "mbr"], default="mbr", help="candidate choice: minimum "
                   "Bayes risk (default) or the paper's highest mean confidence")
    p.add_argument("--keep-repeats", action="store_true", help="keep a word written twice in a row (the "
                   "default writes it once)")
    p.add_argument("--no-cuda-graph", action="store_true", help="on a GPU, run the decoding loop eagerly")
    p.add_argument("--no-compile", action="store_true", help="on a GPU, record the CUDA graphs without "
                   "torch.compile (no compilation on first use)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def main(argv=None):
    args = get_args(argv)
    opts = DecodeOptions(candidates=args.candidates, steps=args.steps, select=args.select,
                         drop_repeats=not args.keep_repeats, cuda_graph=not args.no_cuda_graph,
                         compile=not args.no_compile)
    try:
        model, ckpt = load_for_decoding(args.ckpt, args.device, with_ckpt=True) if args.ckpt != "none" \
            else (None, {})
        bad = transcribe_files(model, args.files, opts) if args.files else []
        if args.eval:
            size = args.size or (ckpt.get("args") or {}).get("size") or "default"
            Path(args.out).mkdir(parents=True, exist_ok=True)
            evaluate(model, args.eval, opts, args.device, fresh_path(Path(args.out) / f"{Path(args.eval).stem}.csv"),
                     args.baseline, size, args.limit, args.show)
    except KeyboardInterrupt:
        raise SystemExit("interrupted (Ctrl-C): nothing was written for the split in progress") from None
    except (data.AudioError, FileNotFoundError, ValueError, data.DataError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # a read-only --out folder, a file where a folder should be, a full disk
        raise SystemExit(f"error: {data.os_error(e, f'--out {args.out}')}") from None
    if bad:
        raise SystemExit(f"error: {len(bad)} of {len(args.files)} files could not be read (" + "; ".join(bad[:3])
                         + (" ..." if len(bad) > 3 else "") + ")" + ("; the others were transcribed"
                                                                    if len(bad) < len(args.files) else ""))


def fresh_path(path: Path) -> Path:
    """path, or the first free path-2, path-3, ... next to it: an earlier result is never overwritten."""
    n, out = 2, path
    while out.exists() or out.with_suffix(".json").exists():
        out, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    if out != path:
        print(f"{path} exists: writing {out} (and its .json) instead", file=sys.stderr)
    return out


def check_args(p, args):
    """What argparse's types cannot see: flags that contradict this machine or each other."""
    if problem := data.device_problem(args.device):
        p.error(problem)
    if not args.ckpt.strip():
        p.error("--ckpt is empty: pass a checkpoint written by train.py, e.g. checkpoints/stage2.pt")
    if args.ckpt == "none" and args.files:
        p.error("--ckpt none only scores Whisper baselines with --eval; transcribing files needs a trained "
                "checkpoint")
    if args.ckpt == "none" and args.eval and not args.baseline:
        p.error("--ckpt none --eval needs --baseline (e.g. --baseline tiny.en): there is nothing else to score")
    for name in args.baseline:  # before any decoding, not after it
        if not (name in data.OFFLINE_WHISPER or name.endswith(".pt") and Path(name).is_file()):
            p.error(f"--baseline {name}: use {' or '.join(data.OFFLINE_WHISPER)}, or the path of an openai-whisper .pt "
                    f"file (audio files go before --baseline)")
    if not (args.files or args.eval):
        p.error("nothing to do: pass audio files or --eval SPLIT (the benchmark: python -m tools.bench)")
    if problem := data.path_problem(args.out, "--out"):
        p.error(problem)


def has_pauses(audio: np.ndarray, frame: int = 400) -> bool:
    """Speech rises and falls: its loudest 25 ms frames are far (> 15 dB) above its quietest. Steady noise or a
    held tone is not."""
    n = len(audio) // frame
    if n < 20:
        return True  # too short to tell
    rms = np.sqrt(np.mean(audio[:n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    return float(np.percentile(db, 95) - np.percentile(db, 10)) > 15.0


def transcribe_files(model, files, opts) -> list[str]:
    """Print `file<TAB>transcript` for every readable file, in order; a file that cannot be read gets an error
    line on stderr and the rest go on. Returns those errors."""
    names, audios, errors = [], [], []
    for f in files:
        try:
            audios.append(data.load_audio(f, allow_empty=True))
            names.append(f)
        except data.AudioError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            errors.append(str(e))
    for f, a in zip(names, audios):
        if not has_speech(a):
            data.warn(f"{f}: no speech ({'empty' if len(a) == 0 else 'silent or under 0.1 s'}): empty transcript")
        elif not has_pauses(a):
            data.warn(f"{f}: its loudness never drops (steady noise or music, not speech?): a transcript of it may "
                      f"be invented words")
    for f, t in zip(names, transcribe(model, audios, opts) if audios else []):
        print(f"{f}\t{t}", flush=True)
    return errors


if __name__ == "__main__":
    main()
