"""
The Whisfusion curriculum (paper section 2), one stage per call:

    python train.py --stage 0    # the decoder learns language on text alone (1/t ELBO; stands in for SMDM-170M)
    python train.py --stage 1    # only the cross-attention adapter trains; mask ratio t ~ U(0, 1)
    python train.py --stage 2    # adapter + LoRA (or everything with --lora-rank 0); t ~ U(0.7, 1); EMA

Each stage starts from the previous stage's checkpoint in --out-dir. Several GPUs:
    torchrun --nproc_per_node 4 train.py --stage 1

Read from the top: the three stages (STAGE_DEFAULTS), the training loop (`train`, `train_step`), what each stage
starts from (`init_model`), the learning-rate schedule, then the data each stage trains on. Below the line
"Plumbing" are the command line, the feature cache, the batch sampler, processes, checkpoints and logs.
"""
import argparse
import csv
import gc
import hashlib
import itertools
import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import data
import decode
import whisfusion as W

# ----------------------------------------------------------------------------------------------------------
# The curriculum: what trains in each stage, on which mask ratios, and why

STAGE_DEFAULTS = {  # lr, AdamW betas and weight decay, the mask-ratio range t ~ U(lo, hi), and the loss
    # Stage 0 (ours): the paper starts from SMDM-170M, a masked-diffusion language model pretrained on text, which
    # cannot be had offline. So the decoder first learns language from text alone, with SMDM's recipe: every mask
    # ratio, the 1/t-weighted ELBO, SMDM's optimiser settings.
    0: dict(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, mask=(0.0, 1.0), elbo=True),
    # Stage 1 (paper 2.4): only the cross-attention adapter trains; the language model stays frozen, so it keeps
    # what it knows while the adapter learns to read the audio. Every mask ratio, from filling in one word to
    # writing the whole transcript; the plain mean cross-entropy of the masked tokens.
    1: dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01, mask=(0.0, 1.0), elbo=False),
    # Stage 2 (paper 2.5): adapter + decoder (LoRA, or all of it with --lora-rank 0) on high mask ratios only.
    # Decoding starts from an all-[MASK] canvas and re-masks 80-90 % of it at every step (decode.py), so the
    # decoder specialises in what it will see: t ~ U(0.7, 1). EMA of the weights smooths the last steps.
    2: dict(lr=3e-4, betas=(0.9, 0.999), weight_decay=0.005, mask=(0.7, 1.0), elbo=False),
}


def train(args):
    """One stage: nanoGPT's loop (data, model, optimizer, then steps until --steps or the time budget), with a
    checkpoint every --ckpt-every steps and at the end."""
    device = setup_distributed(args)
    seed_everything(args.seed + RANK)
    hp = STAGE_DEFAULTS[args.stage]
    peak_lr = hp["lr"] if args.lr is None else args.lr
    check_out_dir(args)
    utts = load_utterances(args)  # before anything heavy: missing data fails first
    model, resume = load_resume(args, device) if args.resume else (init_model(args, device, utts["train"]), None)
    if resume is not None and resume.get("finished"):
        log(f"{stage_path(args.out_dir, args.stage)} is finished; nothing to resume")
        return resume
    W.set_trainable(model, args.stage)
    log_parameters(model, args.stage)
    batches, dev = stage_batches(args, model, utts, device)
    shards = Shards(len(batches), args.batch_size, args.seed, RANK, WORLD, batches.lengths)
    optimizer = torch.optim.AdamW(param_groups(model, hp["weight_decay"]), lr=peak_lr, betas=hp["betas"],
                                  fused=device.startswith("cuda"))
    ema = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad} \
        if args.stage == 2 and args.ema else None  # the trainable weights' exponential moving average
    step, elapsed0, ema = restore(resume, optimizer, ema, device, args) if resume else (0, 0.0, ema)
    raw, model = model, wrap_model(model, args, device)  # raw: the model itself; model: compiled and/or DDP
    amp = decode.autocast(device)  # bf16 on a GPU
    book, loss = Logbook(args, step), float("nan")
    t_start = time.time() - elapsed0  # the clock continues on --resume
    model.train()
    while step < args.steps:
        lr = lr_at(step, args, peak_lr, shared_elapsed(t_start, device))
        for g in optimizer.param_groups:
            g["lr"] = lr
        loss = train_step(model, raw, batches, shards, step, args, hp, amp, device)
        if any_rank(not math.isfinite(loss), device):  # every rank stops together
            raise SystemExit(f"loss is {loss} at step {step}: stopping. The last good checkpoint is "
                             f"{stage_path(args.out_dir, args.stage)}; resume with a lower --lr (now {peak_lr}).")
        torch.nn.utils.clip_grad_norm_(raw.parameters(), args.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema_update(ema, raw, args.ema)
        step += 1
        elapsed = shared_elapsed(t_start, device)  # rank 0's clock: every rank takes the same decision
        out_of_time = bool(args.time_limit) and elapsed > 60 * args.time_limit
        final = step == args.steps or out_of_time
        logged = book.step(step, loss, lr, args.batch_size * args.grad_accum * WORLD, raw.cfg.decoder.canvas_len)
        if is_master() and (step % args.eval_every == 0 or final):
            with swap_in(raw, ema):
                logged.update(dev_metrics(raw, dev, args, device, amp))
        book.write(step, loss, lr, logged, elapsed)  # the training clock, before this step's dev evaluation
        if step % args.ckpt_every == 0 or final:
            save_checkpoint(args, model, optimizer, step, ema, finished=final, elapsed_s=elapsed)
        if out_of_time:
            log(f"time budget of {args.time_limit} min used at step {step}: the schedule has annealed; done")
            break
    book.close(device)
    if WORLD > 1:
        dist.barrier()  # the other ranks wait here while rank 0 evaluates and saves; then all leave together
    return {"step": step, "loss": loss}


def train_step(model, raw, batches, shards, step, args, hp, amp, device) -> float:
    """The gradients of one optimizer step, over --grad-accum micro-batches: corrupt the clean canvases with the
    forward process (mask ratio t from the stage's range), predict the masked tokens from the rest (and the
    audio, from stage 1 on), backpropagate the stage's loss. Returns the loss."""
    lo, hi = hp["mask"]
    total = 0.0
    for micro in range(args.grad_accum):
        idx = shards.batch_at(step * args.grad_accum + micro).to(device)
        feats, n_frames, x0 = batches.get(idx)  # stage 0: no audio (None, None, canvases)
        t = W.sample_mask_ratio(len(idx), lo, hi, device=device)
        xt, masked = W.forward_process(x0, t, raw.cfg.decoder.mask_id)
        sync = nullcontext() if micro == args.grad_accum - 1 or WORLD == 1 else model.no_sync()
        with sync, amp:
            # n_ctx: keep the batch's rounded frame count (a cut to its longest clip would bring back a new
            # attention shape at every step, and a GPU sync)
            ctx = None if feats is None else raw.audio_context(feats, n_frames, n_ctx=feats.shape[1])
            logits = model(xt, ctx, where=masked)  # (N, n_out): only where the loss looks
            y0 = raw.rows(x0)  # targets as head rows (the ids themselves with the full vocabulary)
            loss = W.elbo_loss(logits, y0, masked, t) if hp["elbo"] else W.masked_token_loss(logits, y0, masked)
            if ctx is not None and raw.ctc_head is not None:  # the auxiliary alignment signal (beyond the paper)
                loss = loss + raw.cfg.adapter.ctc_weight * W.ctc_loss(raw, ctx, *batches.ctc_targets(idx), n_frames)
            (loss / args.grad_accum).backward()
        total += loss.item() / args.grad_accum
    return total


def init_model(args, device, train_utts=()):
    """Stage 0: a fresh decoder on the Whisper encoder. Later stages: the previous stage's checkpoint, with the
    parts the flags add (stage 2's LoRA slots, audio layers, a CTC head) built fresh around its weights."""
    if args.stage == 0:
        cfg = W.WhisfusionConfig.from_dict(W.PRESETS[args.preset].to_dict())
        window = cfg.encoder.n_audio_ctx  # the preset's encoder window (cpu: 4 s); the rest is Whisper's
        cfg.whisper = args.whisper or cfg.whisper
        cfg.encoder, whisper_sd = W.whisper_encoder_dims(data.whisper_checkpoint(cfg.whisper))
        cfg.encoder.n_audio_ctx = min(window, cfg.encoder.n_audio_ctx)
        if args.vocab_from_corpus:
            cfg.decoder.vocab = corpus_vocab(train_utts)
        set_options(cfg, args)
        return W.build_model(cfg, whisper_sd).to(device)
    init = Path(args.init or stage_path(args.out_dir, args.stage - 1))
    if not init.exists():
        raise SystemExit(f"{init} is missing: stage {args.stage} starts from stage {args.stage - 1}. Run "
                         f"`python train.py --stage {args.stage - 1} --out-dir {args.out_dir}` first "
                         f"(or pass --init PATH).")
    model, ckpt = W.load_model(init)
    if ckpt.get("stage") != args.stage - 1:
        log(f"note: {init} holds stage {ckpt.get('stage')}, not stage {args.stage - 1}")
    cfg, old = model.cfg, W.WhisfusionConfig.from_dict(model.cfg.to_dict())
    set_options(cfg, args, model)
    if cfg.lora.rank != old.lora.rank or cfg.adapter.audio_layers != old.adapter.audio_layers \
            or bool(cfg.adapter.ctc_weight) != bool(old.adapter.ctc_weight):  # new parts: build, then load
        state = {k: v for k, v in model.state_dict().items() if cfg.lora.rank == old.lora.rank or "lora_" not in k}
        model = W.build_model(cfg)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if not (all("lora_" in k or W.is_adapter(k) for k in missing) and all(W.is_adapter(k) for k in unexpected)):
            raise SystemExit(f"{init}: its weights do not fit the model these flags ask for (missing "
                             f"{missing[:3]}, unexpected {unexpected[:3]}); pass the checkpoint of the previous stage")
    return model.to(device)


def set_options(cfg: W.WhisfusionConfig, args, model=None):
    """The flags that shape the model, into its config (saved with every checkpoint) and, for the regularisers,
    into an already-built model: --feature-dropout, --dropout, --time-masks, --audio-layers, --ctc-weight and,
    in stage 2, --lora-rank (alpha = 2 x rank keeps the update's scale alpha / rank at the presets' 2)."""
    for section, names in ((cfg.adapter, ("feature_dropout", "time_masks", "audio_layers", "ctc_weight")),
                           (cfg.decoder, ("dropout",))):
        for name in names:  # each flag is named after its config field
            if getattr(args, name) is not None:
                setattr(section, name, getattr(args, name))
    if args.stage == 2 and args.lora_rank is not None and args.lora_rank != cfg.lora.rank:
        cfg.lora.rank, cfg.lora.alpha = args.lora_rank, 2.0 * args.lora_rank if args.lora_rank else cfg.lora.alpha
    if model is not None:
        model.feature_dropout.p = cfg.adapter.feature_dropout
        for blk in model.blocks:
            blk.drop.p = cfg.decoder.dropout


def param_groups(model, weight_decay):
    """No weight decay on norms and biases (paper 2.4), nor on the embedding."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name or name.startswith("wte") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step, args, peak, elapsed_s=0.0):
    """Linear warm-up, then cosine down to peak * min_lr_ratio. With --time-limit, progress is the larger of
    the step and the time fractions, so a time-budgeted run still ends fully annealed."""
    warm = max(1, int(args.warmup * args.steps))
    progress = step / args.steps
    if args.time_limit:
        progress = max(progress, elapsed_s / (60 * args.time_limit))
    if progress < args.warmup:
        return peak * max(step + 1, progress / args.warmup * warm) / warm
    progress = min(1.0, (progress - args.warmup) / (1 - args.warmup))
    return peak * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def ema_update(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * weights, for the trainable weights (stage 2)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in ema:
                ema[n].lerp_(p.float(), 1 - decay)


DEV_LOSS_UTTS = 512  # the dev loss on at most this many utterances: a stable number in a few seconds


@torch.no_grad()
def dev_metrics(model, dev, args, device, amp):
    """Dev masked-token loss (fixed masks, t ~ the stage's range) and a quick dev WER through decode.py."""
    model.eval()
    g = torch.Generator(device=device).manual_seed(0)
    lo, hi = STAGE_DEFAULTS[args.stage]["mask"]
    losses = []
    for i in range(0, min(len(dev), DEV_LOSS_UTTS), args.batch_size):
        idx = torch.arange(i, min(i + args.batch_size, len(dev), DEV_LOSS_UTTS), device=device)
        feats, n, x0 = dev.get(idx)
        t = W.sample_mask_ratio(len(idx), lo, hi, device=device, generator=g)
        xt, masked = W.forward_process(x0, t, model.cfg.decoder.mask_id, generator=g)  # the same masks every time
        with amp:
            logits = model(xt, None if feats is None else model.audio_context(feats, n))
        losses.append(W.masked_token_loss(logits, model.rows(x0, strict=False), masked).item())
    out = {"dev_loss": float(np.mean(losses))}
    if args.stage > 0 and args.eval_utts:
        utts = dev.ds.utts[:args.eval_utts]
        feats, n, _ = dev.get(torch.arange(len(utts), device=device))
        hyps = decode.transcribe_features(model, feats, n, decode.DecodeOptions())
        out["dev_wer"] = decode.wer([u.text for u in utts], hyps)[0]
    model.train()
    return out

# ----------------------------------------------------------------------------------------------------------
# What each stage trains on: canvases of text (stage 0), and cached encoder features with their canvases

def stage_batches(args, model, utts, device):
    """(training batches, dev batches): text canvases for stage 0, audio features + canvases for stages 1-2."""
    if args.stage > 0:
        train_utts = data.speed_perturbed(utts["train"], args.speed_perturb)  # + copies at other speeds (off: none)
        return (AudioBatches(model, train_utts, args.train_split, device, cache=not args.no_cache),
                AudioBatches(model, utts["dev"], args.dev_split, device))
    L, vocab = model.cfg.decoder.canvas_len, model.cfg.decoder.vocab
    canvases = text_canvases("train", L, args.size, vocab).to(device)
    log(f"stage 0 text: {len(canvases):,} distinct training sentences and passages")
    dev = text_canvases("dev", L, args.size, vocab)
    return TextBatches(canvases), TextBatches(dev[torch.randperm(len(dev), generator=torch.Generator().manual_seed(0))]
                                              .to(device))


def text_canvases(split: str, canvas_len: int, size: str = "default", vocab: tuple = ()) -> torch.Tensor:
    """Stage 0: the text of one split (train, or dev for the dev loss) as canvases (N, L); no audio needed.

    The books' sentences, plus passages of 55-75 consecutive words because the corpus also holds 20-30 s
    utterances whose canvases are that long. A grammar-made corpus (data.SIZES[size]["grammar"]) takes its own
    sentences instead of the books; with a restricted vocabulary, a sentence with a token outside it is left out."""
    texts = set()
    if data.SIZES.get(size, {}).get("grammar"):
        texts.update(data.grammar_sentences(split, size))
    else:
        for sents in data.build_text()[split].values():
            texts.update(sents)
            passage = []
            for s in sents:
                passage += s.split()
                if len(passage) >= 55:
                    if len(passage) <= 75:
                        texts.add(" ".join(passage))
                    passage = []
    allowed = set(vocab)
    rows = []
    for s in sorted(texts):
        try:
            row = data.make_canvas(s, canvas_len)
        except ValueError:
            continue  # longer than the canvas
        if not allowed or allowed.issuperset(row):
            rows.append(row)
    return torch.tensor(rows)


class TextBatches:
    """Stage 0's batches: canvases only (no audio), in the same (features, n_frames, canvas) form."""
    lengths = None  # no audio: nothing to bucket by

    def __init__(self, canvases):
        self.canvas = canvases

    def __len__(self):
        return len(self.canvas)

    def get(self, idx):
        return None, None, self.canvas[idx]


class AudioBatches:
    """Batches of (features, n_frames, canvas) for stages 1-2 (which utterances: `Shards`), from features cached once (the encoder is
    frozen, so its output never changes) or, with cache=False (--no-cache), from the encoder at every step."""

    def __init__(self, model, utts, split, device, cache=True):
        self.ds = data.SpeechDataset(utts, model.cfg.decoder.canvas_len, train=True)
        if len(self.ds) == 0:
            raise SystemExit(f"no usable utterances in '{split}' (all over 30 s or the canvas)")
        self.canvas = torch.stack([torch.tensor(data.make_canvas(u.text, model.cfg.decoder.canvas_len))
                                   for u in self.ds.utts]).to(device)
        if model.ctc_head is not None:  # CTC targets (characters), only for a model with the CTC head
            chars = [torch.tensor(W.ctc_targets(data.normalize_text(u.text))) for u in self.ds.utts]
            self.ctc_len = torch.tensor([len(c) for c in chars], device=device)
            self.ctc_chars = torch.nn.utils.rnn.pad_sequence(chars, batch_first=True).to(device)
        self.model, self.device, self.cached, self.lengths = model, device, cache, None
        if cache:
            self.flat, self.n_frames = cached_features(model, self.ds.utts, device)  # (frames, d), (N,)
            self.start = torch.cumsum(self.n_frames, 0) - self.n_frames
            self.lengths = self.n_frames.cpu()  # for length-bucketed batches (Shards)

    def __len__(self):
        return len(self.ds)

    def get(self, idx):
        """-> features (B, T, d) zero-padded, n_frames (B,), canvas (B, L)."""
        if self.cached:
            n = self.n_frames[idx]
            return gather_frames(self.flat, self.start[idx], n, multiple=64), n, self.canvas[idx]
        mel, n, _ = data.collate([self.ds[i] for i in idx.tolist()])
        return self.model.embed_audio(mel.to(self.device)), n.to(self.device), self.canvas[idx]

    def ctc_targets(self, idx):
        """-> character targets (B, S) zero-padded, lengths (B,) for the auxiliary CTC loss."""
        lengths = self.ctc_len[idx]
        return self.ctc_chars[idx, :int(lengths.max())], lengths


# ----------------------------------------------------------------------------------------------------------
# Plumbing (not needed to follow the curriculum): the command line, the feature cache, the batch sampler
# (`gather_frames`, `Shards`), processes, checkpoints, logs

def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=[0, 1, 2], required=True, help="curriculum stage to train")
    p.add_argument("--preset", default="default", choices=list(W.PRESETS), help="model size (stage 0 only; "
                   "later stages take the config of their init checkpoint)")
    p.add_argument("--size", default="default", choices=list(data.SIZES), help="TinySpeech corpus size")
    p.add_argument("--train-split", default="train", help="split name, LibriSpeech folder or .tsv manifest")
    p.add_argument("--dev-split", default="dev", help="split for the dev loss and dev WER")
    p.add_argument("--whisper", default=None, help="Whisper checkpoint for the encoder (tiny.en, base, .pt); "
                   "default: the preset's (base for `default`, tiny.en for the CPU presets, small for `paper`, "
                   "which only openai-whisper's download can fetch)")
    p.add_argument("--out-dir", default="checkpoints", help="where stage{N}.pt and logs are written")
    p.add_argument("--init", default=None, help="checkpoint to start from (default: OUT_DIR/stage{N-1}.pt)")
    p.add_argument("--resume", action="store_true", help="continue OUT_DIR/stage{N}.pt where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start OUT_DIR/stage{N}.pt again from scratch, "
                   "replacing the one there (without it, an existing stage{N}.pt is never overwritten)")
    p.add_argument("--steps", type=data.positive_int, default=3000, help="optimizer steps")
    p.add_argument("--time-limit", type=data.nonneg_float, default=0, help="a budget in minutes: the schedule "
                   "anneals by whichever of --steps and the time limit comes first, and the run ends there; 0 = "
                   "off. A resumed run continues the clock where its checkpoint stopped")
    p.add_argument("--batch-size", type=data.positive_int, default=64, help="utterances per step per process")
    p.add_argument("--grad-accum", type=data.positive_int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=data.positive_float, default=None, help="peak learning rate (default per stage)")
    p.add_argument("--warmup", type=data.unit_float, default=0.05, help="share of the steps spent in linear "
                   "warm-up")
    p.add_argument("--min-lr-ratio", type=data.closed_unit_float, default=0.1, help="the cosine ends at lr * this")
    p.add_argument("--clip", type=data.positive_float, default=0.5, help="gradient-norm clip (paper: 0.5)")
    p.add_argument("--lora-rank", type=data.nonneg_int, default=None, help="stage 2: LoRA rank; 0 = full "
                   "fine-tune (paper)")
    p.add_argument("--ema", type=data.unit_float, default=0.995, help="stage 2: EMA decay of the trainable "
                   "weights; 0 = off")
    p.add_argument("--feature-dropout", type=data.unit_float, default=None, help="dropout on audio features "
                   "(regulariser)")
    p.add_argument("--dropout", type=data.unit_float, default=None, help="dropout on the decoder's residual "
                   "branches")
    p.add_argument("--time-masks", type=data.nonneg_int, default=None, help="SpecAugment-style time masks per "
                   "utterance on the encoder features (stages 1-2; regulariser)")
    p.add_argument("--ctc-weight", type=data.nonneg_float, default=None, help="weight of the auxiliary CTC loss "
                   "on the adapted audio features (stages 1-2; 0 = off, the paper)")
    p.add_argument("--speed-perturb", type=data.speed_factors, default=(), help="stages 1-2: also train on "
                   "every training utterance played at these speeds, e.g. 0.9,1.1 (then 3x the audio in the "
                   "feature cache; off by default)")
    p.add_argument("--audio-layers", type=data.nonneg_int, default=None, help="trainable transformer layers over "
                   "the audio features before the adapter's K/V (0 = none, the paper)")
    p.add_argument("--vocab-from-corpus", action="store_true", help="stage 0: the decoder reads and writes only "
                   "the tokens of the training transcripts (+ sot, eot): a small output layer for a narrow task "
                   "such as --size numbers; the list is saved in the checkpoint's config (decoder.vocab)")
    p.add_argument("--no-cache", action="store_true", help="run the encoder every step instead of caching "
                   "its features once (slower; for data too large to cache)")
    p.add_argument("--log-every", type=data.positive_int, default=50, help="steps between log lines")
    p.add_argument("--eval-every", type=data.positive_int, default=500, help="steps between dev loss / dev WER")
    p.add_argument("--eval-utts", type=data.nonneg_int, default=64, help="dev utterances for the quick dev WER "
                   "(0 = dev loss only)")
    p.add_argument("--ckpt-every", type=data.positive_int, default=500, help="steps between checkpoints")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seed", type=int, default=1337, help="random seed")
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p, args):
    """What argparse's types cannot see: flags that contradict each other or this machine."""
    if args.resume and args.overwrite:
        p.error("--resume and --overwrite contradict each other: --resume continues OUT_DIR/stage{N}.pt, "
                "--overwrite starts it again; pass one")
    if args.stage == 0 and args.speed_perturb:
        p.error("--speed-perturb is for stages 1 and 2 (stage 0 trains on text only)")
    if args.stage == 0 and args.init:
        p.error("--init is for stages 1 and 2 (stage 0 starts fresh from --whisper and --preset)")
    if problem := data.device_problem(args.device):
        p.error(problem)
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        p.error(f"--out-dir {out} is a file, not a folder: pass a folder (it is created when missing)")


def corpus_vocab(utts) -> tuple:
    """--vocab-from-corpus: the Whisper ids of the training transcripts, plus sot and eot (sorted)."""
    tok = data.get_tokenizer()
    ids = {tok.sot, tok.eot} | {i for u in utts for i in tok.encode(" " + data.normalize_text(u.text))}
    return tuple(sorted(ids))


@torch.no_grad()
def cache_features(model, utts, device, batch_size=32):
    """Run the frozen encoder once per utterance; keep only the frames that hold audio, in fp16.

    Returns flat (sum of frames, n_audio_state) and n_frames (N,): utterance i is flat[start_i : start_i + n_i]."""
    from tqdm import tqdm
    ds = data.SpeechDataset(utts, model.cfg.decoder.canvas_len, train=False)
    workers = min(16, os.cpu_count() or 1)
    # a private generator: the loader's worker seeds come from it, not from the global RNG, so a run that
    # builds the cache trains exactly as one that finds it on disk
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=data.collate, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    feats, frames = [], []
    amp = decode.autocast(device)
    for mel, n_frames, _ in tqdm(loader, desc="encoder features", disable=not is_master()):
        with amp:
            f = model.embed_audio(mel.to(device))  # (B, 1500, d)
        n_frames = n_frames.clamp(max=f.shape[1])  # a short encoder window (cpu preset) cuts longer audio
        feats += [f[i, :n].half() for i, n in enumerate(n_frames.tolist())]
        frames.append(n_frames)
    return torch.cat(feats), torch.cat(frames).to(device)


def feature_key(model, utts) -> str:
    """The feature cache's name: every audio file's path, size and modification time (and speed, for a
    --speed-perturb copy), and the encoder's weights, so replaced audio or another encoder never reuses stale
    features."""
    h = hashlib.sha256()
    for u in utts:
        st = os.stat(u.audio)
        speed = f"\0{u.speed}" if u.speed != 1 else ""  # the files' own audio keeps its key
        h.update(f"{u.audio}\0{st.st_size}\0{st.st_mtime_ns}{speed}\n".encode())
    for name, t in sorted(model.encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_features(model, utts, device):
    """The encoder features of utts: loaded from data/features/<key>.pt, or computed and saved there. A run of
    utterances at another speed (--speed-perturb copies, which data.speed_perturbed puts after the originals)
    gets a file of its own, so the originals keep their cache and each speed's can be built on its own."""
    runs = [list(run) for _, run in itertools.groupby(utts, key=lambda u: u.speed)]
    if len(runs) > 1:
        return tuple(torch.cat(t) for t in zip(*(cached_features(model, run, device) for run in runs)))
    t0 = time.time()
    path = data.DATA_DIR / "features" / f"{feature_key(model, utts)}.pt"
    loaded = load_features(path, len(utts), device)
    if loaded is None:
        loaded = cache_features(model, utts, device)
        if is_master():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                data.atomic_save((loaded[0].cpu(), loaded[1].cpu()), path)
            except OSError as e:  # a read-only data folder: train on, without a cache on disk
                data.warn(f"cannot cache the encoder features ({data.os_error(e)}); they are computed again next run")
    log(f"encoder features of {len(utts)} utterances ready in {time.time() - t0:.1f} s "
        f"({loaded[0].numel() * 2 / 2**30:.2f} GiB fp16, {path})")
    return loaded


def load_features(path, n_utts, device):
    """A cached (flat, n_frames) that loads and fits these utterances, or None (then it is rebuilt)."""
    if not path.exists():
        return None
    try:
        flat, n_frames = torch.load(path, map_location=device, weights_only=True)
        if len(n_frames) == n_utts and int(n_frames.sum()) == len(flat):
            return flat, n_frames
    except Exception:  # a damaged cache file is only a cache: build it again
        pass
    data.warn(f"{path}: damaged feature cache; building it again")
    return None


def gather_frames(flat, start, n, multiple: int = 1):
    """Rows start[i] : start[i] + n[i] of flat (frames, d) as one zero-padded batch (B, T, d), in a few
    tensor operations (a Python loop over the rows would launch a copy per utterance). T is max n rounded up to
    a multiple: the GPU's attention kernels are planned once per shape, and a new shape at every step costs more
    than the padding."""
    pos = torch.arange(math.ceil(int(n.max()) / multiple) * multiple, device=flat.device)  # (T,)
    rows = (start[:, None] + pos).clamp(max=len(flat) - 1)  # (B, T) indices into flat
    return flat[rows].masked_fill((pos >= n[:, None])[..., None], 0)


class Shards:
    """Epoch-wise random permutation of range(n); process r of w takes every w-th index (a distributed sampler).

    With lengths (the encoder frames of each utterance): each run of `bucket` batches is sorted by length
    before it is cut into batches, and the batches are then shuffled. A batch's features are cut to its longest
    clip, so batches of similar lengths pad less: with 8 % of the clips 20-30 s long, nearly every random batch
    of 128 holds one and is padded to 30 s (the cross-attention K/V and scores cost ~3x the real frames).
    bucket=32: runs long enough that most batches hold clips of similar length (32 x 256 utterances span the
    corpus's length mix), short enough that an epoch still visits the corpus in a random order."""

    def __init__(self, n, batch, seed, rank, world, lengths=None, bucket=32):
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.lengths, self.bucket, self.epoch = lengths, bucket, (None, None)

    def batch_at(self, step):
        per_epoch = max(1, self.n // (self.batch * self.world))
        epoch, i = divmod(step, per_epoch)
        if self.epoch[0] != epoch:
            self.epoch = (epoch, self.batches(epoch, per_epoch))
        return self.epoch[1][i]

    def batches(self, epoch, per_epoch):
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.n, generator=g)
        if self.n < self.batch * self.world:
            perm = perm.repeat(math.ceil(self.batch * self.world / self.n))
        mine = perm[self.rank::self.world][:per_epoch * self.batch]
        if self.lengths is None:
            return mine.split(self.batch)
        runs = [run[self.lengths[run].argsort(stable=True)] for run in mine.split(self.batch * self.bucket)]
        batches = torch.cat(runs).split(self.batch)
        return [batches[j] for j in torch.randperm(len(batches), generator=g)]

RANK, WORLD = 0, 1


def is_master():
    return RANK == 0


def log(msg):
    if is_master():
        print(msg, flush=True)


def setup_distributed(args):
    """nanoGPT's way: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; a plain `python train.py` runs one process."""
    global RANK, WORLD
    if int(os.environ.get("RANK", -1)) == -1:
        return args.device
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    RANK, WORLD = dist.get_rank(), dist.get_world_size()
    if args.device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return args.device


def shared_elapsed(t_start, device) -> float:
    """Seconds since t_start by rank 0's clock, the same number on every rank: the learning rate and the
    --time-limit decision must agree, or one rank leaves the loop while another waits in a collective."""
    s = time.time() - t_start
    if WORLD > 1:
        t = torch.tensor([s], dtype=torch.float64, device=device)
        dist.broadcast(t, 0)
        s = t.item()
    return s


def any_rank(flag: bool, device) -> bool:
    """True on every rank when it is true on any (e.g. a non-finite loss): all ranks stop together."""
    if WORLD == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
             "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    np.random.set_state(("MT19937", np.array(s["numpy"], dtype=np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(s["python"]), None))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


def check_out_dir(args):
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    if stage_path(args.out_dir, args.stage).exists() and not (args.resume or args.overwrite):
        raise SystemExit(f"{stage_path(args.out_dir, args.stage)} exists: pass --resume to continue it or --overwrite "
                         f"to start again (or choose another --out-dir)")


def load_utterances(args) -> dict:
    """The train and dev utterances a stage needs (stage 0 reads text only, and the training transcripts only
    for --vocab-from-corpus)."""
    train_utts = data.load_split(args.train_split, args.size) if args.stage > 0 or args.vocab_from_corpus else []
    return {"train": train_utts, "dev": data.load_split(args.dev_split, args.size) if args.stage > 0 else []}


def log_parameters(model, stage):
    counts = W.param_counts(model)
    log(f"stage {stage} | parameters: {json.dumps(counts)} | trainable {counts['trainable']:,} "
        f"| frozen {sum(p.numel() for p in model.parameters()) - counts['trainable']:,}"
        + (f" | {WORLD} processes (torchrun), each with its own batch" if WORLD > 1 else ""))


def wrap_model(model, args, device):
    """torch.compile (--compile) and DistributedDataParallel (torchrun) around the model."""
    if args.compile:
        model = torch.compile(model)
    if WORLD > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[int(os.environ["LOCAL_RANK"])]
                                                          if device.startswith("cuda") else None)
    return model


def seed_everything(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def stage_path(out_dir, stage):
    return Path(out_dir) / f"stage{stage}.pt"


def load_resume(args, device):
    """--resume: the model and the checkpoint of an interrupted stage."""
    if not stage_path(args.out_dir, args.stage).is_file():
        raise SystemExit(f"--resume: {stage_path(args.out_dir, args.stage)} does not exist; start without --resume")
    return W.load_model(stage_path(args.out_dir, args.stage), device)


RESUME_FLAGS = ("batch_size", "grad_accum", "steps", "time_limit", "lr", "warmup", "min_lr_ratio", "seed", "size",
                "train_split", "speed_perturb")  # what decides a run's data order and schedule


def restore(ckpt, optimizer, ema, device, args):
    """Where an interrupted stage stopped: optimizer state and RNG restored; returns step, seconds spent, EMA.
    Flags that decide the data order or the schedule and differ from the interrupted run's get a warning."""
    before = ckpt.get("args") or {}
    plain = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731 (a checkpoint may hold a list)
    changed = [f"--{k.replace('_', '-')} {before[k]} -> {getattr(args, k)}" for k in RESUME_FLAGS
               if k in before and plain(before[k]) != plain(getattr(args, k))]
    if changed:
        data.warn(f"--resume with other flags than the interrupted run ({', '.join(changed)}): it goes on with "
                  f"the new ones, so it will not end where the uninterrupted run would")
    optimizer.load_state_dict(ckpt["optimizer"])
    step, elapsed = ckpt["step"], ckpt.get("elapsed_s", 0.0)
    ema = {k: v.to(device) for k, v in ckpt["ema"].items()} if ckpt.get("ema") else ema
    set_rng_state(ckpt["rng"])
    log(f"resumed at step {step}" + (f", {elapsed:.0f} s of the time budget spent" if args.time_limit else ""))
    return step, elapsed, ema


def save_checkpoint(args, model, optimizer, step, ema, finished, elapsed_s=0.0):
    """Everything needed to continue: model, optimizer, step, config, stage, RNG, EMA and the training seconds
    spent (a resumed --time-limit run continues that clock); written atomically."""
    if not is_master():
        return
    raw = model.module if hasattr(model, "module") else model
    W.save_model(stage_path(args.out_dir, args.stage), raw, optimizer=optimizer.state_dict(), step=step,
                 stage=args.stage, args=vars(args), rng=rng_state(), ema=ema, finished=finished,
                 elapsed_s=elapsed_s)


class Logbook:
    """The progress bar, and one CSV row (stageN_log.csv) per --log-every steps (throughput) or dev evaluation."""
    FIELDS = ["step", "loss", "lr", "dev_loss", "dev_wer", "utt_per_s", "elapsed_s"]

    def __init__(self, args, step):
        from tqdm import tqdm
        self.args, self.path = args, Path(args.out_dir) / f"stage{args.stage}_log.csv"
        if is_master() and (step == 0 or not self.path.exists()):
            self.path.write_text(",".join(self.FIELDS) + "\n")
        self.bar = tqdm(total=args.steps, initial=step, disable=not is_master(), desc=f"stage {args.stage}")
        self.t_last, self.seen = time.time(), 0

    def step(self, step, loss, lr, n_utts, canvas_len) -> dict:
        """Count the step; -> what this step logs: the throughput every --log-every steps, else nothing."""
        self.seen += n_utts
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}")
        row = {}
        if step % self.args.log_every == 0 or step == self.args.steps:
            rate = self.seen / (time.time() - self.t_last)
            self.t_last, self.seen = time.time(), 0
            row["utt_per_s"] = round(rate, 1)
            log(f"throughput {rate:.0f} utterances/s = {rate * canvas_len:.0f} canvas tokens/s")
        return row

    def write(self, step, loss, lr, logged, elapsed_s):
        """One CSV row and console line, when this step logged something (throughput or dev metrics)."""
        if not is_master() or not logged:
            return
        row = {"step": step, "loss": round(loss, 4), "lr": lr, **logged, "elapsed_s": round(elapsed_s, 1)}
        self.bar.write(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        with open(self.path, "a") as f:
            csv.DictWriter(f, self.FIELDS).writerow(row)

    def close(self, device):
        self.bar.close()
        if device.startswith("cuda"):
            log(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB on "
                f"{torch.cuda.get_device_name()}")


class swap_in:
    """Temporarily put the EMA weights into the model (for evaluation)."""

    def __init__(self, model, ema):
        self.model, self.ema, self.saved = model, ema, None

    def __enter__(self):
        if self.ema:
            params = dict(self.model.named_parameters())
            self.saved = {n: params[n].detach().clone() for n in self.ema}
            with torch.no_grad():
                for n, v in self.ema.items():
                    params[n].copy_(v)

    def __exit__(self, *exc):
        if self.saved:
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for n, v in self.saved.items():
                    params[n].copy_(v)


def main(argv=None):
    args = get_args(argv)
    try:
        return train(args)
    except torch.cuda.OutOfMemoryError:
        raise SystemExit(f"out of GPU memory at --batch-size {args.batch_size}: try --batch-size "
                         f"{max(1, args.batch_size // 2)} --grad-accum {args.grad_accum * 2}") from None
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    except data.AudioError as e:  # from a data-loader worker the message carries its traceback: keep the last line
        raise SystemExit(f"error: {str(e).strip().splitlines()[-1].split('AudioError: ')[-1]}") from None
    except (ValueError, data.DataError) as e:  # bad input: W.CheckpointError, data's readers, data.DataError
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # a read-only folder, a file where a folder should be, a full disk
        raise SystemExit(f"error: {data.os_error(e, f'--out-dir {args.out_dir} or the data folder {data.DATA_DIR}')}"
                         ) from None
    finally:
        if dist.is_available() and dist.is_initialized():
            # the DDP wrapper sits in a reference cycle, so it outlives train(): free it (its gradient reducer
            # holds the process group) now, not while the interpreter shuts down, where gloo can abort the process
            gc.collect()
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
