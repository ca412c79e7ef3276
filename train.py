"""
The Whisfusion curriculum (the paper's two stages, after a stage 0 of ours), one stage per call:

    python train.py --stage 0    # the decoder learns language on text alone (1/t ELBO; stands in for SMDM-170M)
    python train.py --stage 1    # only the cross-attention adapter trains; mask ratio t ~ U(0, 1)
    python train.py --stage 2    # adapter + the whole decoder (or LoRA: --lora-rank 16); t ~ U(0.7, 1); EMA

Without flags each stage trains the one-GPU recipe (RECIPES["default"]); `--preset cpu` is the laptop task of
`make demo`. Each stage starts from the previous stage's checkpoint in --out-dir. Several GPUs:
    torchrun --standalone --nproc_per_node 4 train.py --stage 1
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
import signal
import socket
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import data
import decode
import whisfusion as W

# ----------------------------------------------------------------------------------------------------------
# The curriculum: what trains in each stage, on which mask ratios, and why

STAGES = {  # lr, AdamW betas and weight decay, the mask-ratio range t ~ U(lo, hi), and the loss
    # Stage 0 (ours): the paper starts from SMDM-170M, a masked-diffusion language model pretrained on text, which
    # cannot be had offline. So the decoder first learns language from text alone, with SMDM's recipe: every mask
    # ratio, the 1/t-weighted ELBO, SMDM's optimiser settings.
    0: dict(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, mask=(0.0, 1.0), elbo=True),
    # Stage 1 (the paper's first): only the cross-attention adapter trains; the language model stays frozen, so it
    # keeps what it knows while the adapter learns to read the audio. Every mask ratio, from filling in one word to
    # writing the whole transcript; the plain mean cross-entropy of the masked tokens.
    1: dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01, mask=(0.0, 1.0), elbo=False),
    # Stage 2 (the paper's second): adapter + decoder on high mask ratios only. Decoding starts from an all-[MASK]
    # canvas and re-masks 70-90 % of it at every step (decode.py), so the decoder specialises in what it will see:
    # t ~ U(0.7, 1). An exponential moving average of the weights (decay 0.995) smooths the last steps.
    2: dict(lr=3e-4, betas=(0.9, 0.999), weight_decay=0.005, mask=(0.7, 1.0), elbo=False, ema=0.995),
}

RECIPES = {  # what `python train.py --stage N` trains, per model preset; a command-line flag (steps, lr, ...) wins
    # The one-GPU recipe: batch 256 on the default corpus (TinySpeech, 32,000 spoken sentences). Stage 2 would
    # memorise those sentences, so stages 1-2 also hear every utterance 10 % slower and faster (speed
    # perturbation), and stage 2 adds dropout on the decoder's residual branches and two SpecAugment-style time
    # masks on the audio features (docs/results.md measures each); it stops where its dev loss levels off.
    "default": {0: dict(size="default", steps=1500, batch_size=256),
                1: dict(size="default", steps=5200, batch_size=256, speed_perturb=(0.9, 1.1)),
                2: dict(size="default", steps=2300, batch_size=256, speed_perturb=(0.9, 1.1), dropout=0.1,
                        time_masks=2)},
    # The laptop task (`make demo`): the `numbers` corpus, a decoder that reads and writes only the tokens of its
    # training transcripts (vocab_from_corpus), and higher learning rates, which a model this small tolerates.
    "cpu": {0: dict(size="numbers", steps=1300, batch_size=64, lr=1e-3, vocab_from_corpus=True),
            1: dict(size="numbers", steps=1900, batch_size=32, lr=2e-3),
            2: dict(size="numbers", steps=1100, batch_size=32)},
    # The tests: a few steps on the small corpus.
    "tiny": {stage: dict(size="small", steps=200, batch_size=16) for stage in (0, 1, 2)},
}
EVAL_UTTS = 64  # dev utterances decoded for the quick dev WER at every evaluation
DEV_LOSS_UTTS = 512  # the dev loss on at most this many utterances: a stable number in a few seconds


def train(args):
    """One stage: nanoGPT's loop (data, model, optimizer, then --steps steps), with a checkpoint every
    --ckpt-every steps and at the end. A checkpoint is only written from weights that still give a finite loss."""
    device = setup_distributed(args)
    with out_dir_lock(args.out_dir) if is_master() else nullcontext():
        start = starting_checkpoint(args)  # stage 0: none; later: the previous stage's (or this stage's, --resume)
        resume = start[1] if args.resume else None
        if resume is not None and resume.get("finished"):
            log(f"{start[0]} is finished; nothing to resume")
            return resume
        apply_recipe(args, start)
        hp = STAGES[args.stage]
        utts = load_utterances(args)
        model = W.load_model(start[0], device, ckpt=start[1])[0] if args.resume \
            else init_model(args, device, utts["train"], start)
        W.set_trainable(model, args.stage)
        counts = W.param_counts(model)
        frozen = sum(p.numel() for p in model.parameters()) - counts["trainable"]
        log(f"stage {args.stage} | parameters: {json.dumps(counts)} | frozen {frozen:,}"
            + f" | {WORLD} processes (torchrun), each with its own batch" * (WORLD > 1))
        batches, dev = stage_batches(args, model, utts, device)
        shards = Shards(len(batches), args.batch_size, args.seed, RANK, WORLD, batches.lengths)
        optimizer = torch.optim.AdamW(param_groups(model, hp["weight_decay"]), lr=args.lr, betas=hp["betas"],
                                      fused=device.startswith("cuda"))
        ema = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad} \
            if hp.get("ema") else None  # the trainable weights' exponential moving average
        step, ema = restore(resume, optimizer, ema, device, args) if resume else (0, ema)
        raw = model  # the model itself; `model` is DDP-wrapped under torchrun
        if WORLD > 1:
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[int(os.environ["LOCAL_RANK"])]
                                                              if device.startswith("cuda") else None)
        amp = decode.autocast(device)  # bf16 on a GPU
        book, loss = Logbook(args, step, raw.cfg.decoder.canvas_len), float("nan")
        last_good = stage_path(args.out_dir, args.stage) if resume else None
        with stop_on_ctrl_c() as stop:
            model.train()
            while step < args.steps:
                if any_rank(stop["asked"], device):  # Ctrl-C: keep what is finished, then stop
                    last_good = save_checkpoint(args, raw, optimizer, step, ema, finished=False)
                    raise KeyboardInterrupt(f"interrupted at step {step}: {last_good} holds it; continue with "
                                            f"`python train.py --stage {args.stage} --out-dir {args.out_dir} --resume`")
                lr = lr_at(step, args.steps, args.lr)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                loss = train_step(model, raw, batches, shards, step, args, hp, amp, device)
                if any_rank(not math.isfinite(loss), device):  # every rank stops together
                    diverged(args, loss, step, last_good)
                torch.nn.utils.clip_grad_norm_(raw.parameters(), 0.5)  # the paper's clip
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema_update(ema, raw, hp["ema"])
                step += 1
                logged = book.step(step, loss, lr)
                if is_master() and (step % args.eval_every == 0 or step == args.steps):
                    with swap_in(raw, ema):
                        logged.update(dev_metrics(raw, dev, args, device, amp))
                book.write(step, loss, lr, logged)
                if step % args.ckpt_every == 0 or step == args.steps:
                    if any_rank(not still_finite(raw, batches, shards, step, args, hp, amp), device):
                        diverged(args, float("nan"), step, last_good)  # this update broke the model: never saved
                    last_good = save_checkpoint(args, raw, optimizer, step, ema, finished=step == args.steps)
        book.close(device)
        if WORLD > 1:
            dist.barrier()  # the other ranks wait here while rank 0 evaluates and saves; then all leave together
        return {"step": step, "loss": loss}


def train_step(model, raw, batches, shards, step, args, hp, amp, device) -> float:
    """The gradients of one optimizer step, over --grad-accum micro-batches; returns the loss."""
    total = 0.0
    for micro in range(args.grad_accum):
        idx = shards.batch_at(step * args.grad_accum + micro).to(device)
        sync = nullcontext() if micro == args.grad_accum - 1 or WORLD == 1 else model.no_sync()
        with sync, amp:
            loss = batch_loss(model, raw, batches.get(idx), hp)
            (loss / args.grad_accum).backward()
        total += loss.item() / args.grad_accum
    return total


def batch_loss(model, raw, batch, hp, generator=None):
    """The masked-diffusion loss of one batch: corrupt the clean canvases with the forward process (mask ratio t
    from the stage's range), predict the masked tokens from the rest (and the audio, from stage 1 on)."""
    feats, n_frames, x0 = batch  # stage 0: no audio (None, None, canvases)
    t = W.sample_mask_ratio(len(x0), *hp["mask"], device=x0.device, generator=generator)
    xt, masked = W.forward_process(x0, t, raw.cfg.decoder.mask_id, generator=generator)
    # n_ctx: keep the batch's rounded frame count (a cut to its longest clip would bring back a new attention
    # shape at every step, and a GPU sync)
    ctx = None if feats is None else raw.audio_context(feats, n_frames, n_ctx=feats.shape[1])
    logits = model(xt, ctx, where=masked)  # (N, n_out): only where the loss looks
    y0 = raw.rows(x0)  # targets as head rows (the ids themselves with the full vocabulary)
    return W.elbo_loss(logits, y0, masked, t) if hp["elbo"] else W.masked_token_loss(logits, y0, masked)


def init_model(args, device, train_utts, start):
    """Stage 0: a fresh decoder on the Whisper encoder. Later stages: the previous stage's checkpoint, with the
    stage's regularisers in its config and, for --lora-rank, LoRA slots built fresh around its weights."""
    if args.stage == 0:
        cfg = W.WhisfusionConfig.from_dict(W.PRESETS[args.preset].to_dict())
        window = cfg.encoder.n_audio_ctx  # the preset's encoder window (cpu: 4 s); the rest is Whisper's
        cfg.whisper = args.whisper or cfg.whisper
        cfg.encoder, whisper_sd = W.whisper_encoder_dims(data.whisper_checkpoint(cfg.whisper))
        cfg.encoder.n_audio_ctx = min(window, cfg.encoder.n_audio_ctx)
        if args.vocab_from_corpus:
            cfg.decoder.vocab = corpus_vocab(train_utts)
        return W.build_model(cfg, whisper_sd).to(device)
    model = W.load_model(start[0], ckpt=start[1])[0]  # already read by `starting_checkpoint`
    if problem := W.checkpoint_problem(start[0], start[1], model):  # e.g. NaN weights: no learning rate mends them
        raise W.CheckpointError(problem)
    cfg = model.cfg
    cfg.decoder.dropout, cfg.adapter.time_masks = args.dropout, args.time_masks
    for blk in model.blocks:
        blk.drop.p = cfg.decoder.dropout
    if args.stage == 2 and args.lora_rank and args.lora_rank != cfg.lora.rank:  # LoRA slots: build, then load
        cfg.lora.rank, cfg.lora.alpha = args.lora_rank, 2.0 * args.lora_rank  # alpha / rank = 2, the presets'
        state = model.state_dict()
        model = W.build_model(cfg)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or not all("lora_" in k for k in missing):
            raise SystemExit(f"{start[0]}: its weights do not fit the model these flags ask for (missing "
                             f"{missing[:3]}, unexpected {unexpected[:3]}); pass the checkpoint of the previous stage")
    return model.to(device)


def param_groups(model, weight_decay):
    """No weight decay on norms and biases (as the paper's code), nor on the embedding."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name or name.startswith("wte") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step, steps, peak, warmup=0.05, min_ratio=0.1):
    """Linear warm-up over the first 5 % of the steps, then cosine down to peak * min_ratio."""
    warm = max(1, int(warmup * steps))
    if step < warm:
        return peak * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, steps - warm))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def ema_update(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * weights, for the trainable weights (stage 2)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in ema:
                ema[n].lerp_(p.float(), 1 - decay)


@torch.no_grad()
def dev_metrics(model, dev, args, device, amp):
    """Dev masked-token loss (fixed masks, t ~ the stage's range) and a quick dev WER through decode.py."""
    model.eval()
    g, losses = torch.Generator(device=device).manual_seed(0), []
    for i in range(0, min(len(dev), DEV_LOSS_UTTS), args.batch_size):
        idx = torch.arange(i, min(i + args.batch_size, len(dev), DEV_LOSS_UTTS), device=device)
        feats, n, x0 = dev.get(idx)
        t = W.sample_mask_ratio(len(idx), *STAGES[args.stage]["mask"], device=device, generator=g)
        xt, masked = W.forward_process(x0, t, model.cfg.decoder.mask_id, generator=g)  # the same masks every time
        xt = xt.masked_fill(model.rows(xt, strict=False) < 0, model.cfg.decoder.mask_id)  # words it can't write
        with amp:
            logits = model(xt, None if feats is None else model.audio_context(feats, n))
        losses.append(W.masked_token_loss(logits, model.rows(x0, strict=False), masked).item())
    out = {"dev_loss": float(np.mean(losses))}
    if args.stage > 0:
        utts = dev.ds.utts[:EVAL_UTTS]
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
        train_utts = data.speed_perturbed(utts["train"], args.speed_perturb)  # + copies at other speeds
        return (AudioBatches(model, train_utts, args.train_split, device),
                AudioBatches(model, utts["dev"], args.dev_split, device, strict=False))  # unknown ids: not scored
    L, vocab = model.cfg.decoder.canvas_len, model.cfg.decoder.vocab
    canvases = text_canvases("train", L, args.size, vocab).to(device)
    log(f"stage 0 text: {len(canvases):,} distinct training sentences and passages")
    dev = text_canvases("dev", L, args.size, vocab)
    dev = dev[torch.randperm(len(dev), generator=torch.Generator().manual_seed(0))]
    return TextBatches(canvases), TextBatches(dev.to(device))


def text_canvases(split: str, canvas_len: int, size: str = "default", vocab: tuple = ()) -> torch.Tensor:
    """Stage 0: the text of one split (train, or dev for the dev loss) as canvases (N, L): the books' sentences,
    plus passages of 55-75 consecutive words (the corpus also holds 20-30 s utterances that long), or a grammar-made
    corpus's own sentences; with a restricted vocabulary, only the sentences inside it."""
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
    allowed, rows = set(vocab), []
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
    """Stages 1-2's batches of (features, n_frames, canvas), from encoder features cached once: the encoder is
    frozen, so its output never changes."""

    def __init__(self, model, utts, split, device, strict=True):
        self.ds = data.SpeechDataset(utts, model.cfg.decoder.canvas_len, train=True)
        if len(self.ds) == 0:
            raise SystemExit(f"no usable utterances in '{split}' (all over 30 s or the canvas)")
        self.canvas = torch.tensor([data.make_canvas(u.text, model.cfg.decoder.canvas_len) for u in self.ds.utts],
                                   device=device)
        if strict:  # every token it trains on must be one the model can read and write (a restricted vocabulary)
            try:
                model.rows(self.canvas)
            except ValueError as e:
                raise ValueError(f"{split}: {e}") from None
        self.flat, self.n_frames = cached_features(model, self.ds.utts, device)  # (frames, d), (N,)
        self.start = torch.cumsum(self.n_frames, 0) - self.n_frames
        self.lengths = self.n_frames.cpu()  # for length-bucketed batches (Shards)

    def __len__(self):
        return len(self.ds)

    def get(self, idx):
        """-> features (B, T, d) zero-padded, n_frames (B,), canvas (B, L)."""
        n = self.n_frames[idx]
        return gather_frames(self.flat, self.start[idx], n, multiple=64), n, self.canvas[idx]

# ----------------------------------------------------------------------------------------------------------
# Plumbing (not needed to follow the curriculum): the command line, the feature cache, the batch sampler,
# processes, checkpoints, logs

def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=[0, 1, 2], required=True, help="curriculum stage to train")
    p.add_argument("--preset", default=None, choices=list(W.PRESETS), help="model size and its recipe (RECIPES): "
                   "default (one GPU), cpu (make demo) or tiny (tests); stages 1-2 take their init checkpoint's")
    p.add_argument("--size", default=None, choices=list(data.SIZES), help="TinySpeech corpus (default: the recipe's)")
    p.add_argument("--train-split", default="train", help="split name, LibriSpeech folder or .tsv manifest")
    p.add_argument("--dev-split", default="dev", help="split for the dev loss and dev WER")
    p.add_argument("--whisper", default=None, help="stage 0: the encoder's Whisper (tiny.en, base, a .pt)")
    p.add_argument("--out-dir", default="checkpoints", help="where stage{N}.pt and logs are written")
    p.add_argument("--init", default=None, help="checkpoint to start from (default: OUT_DIR/stage{N-1}.pt)")
    p.add_argument("--resume", action="store_true", help="continue OUT_DIR/stage{N}.pt where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start OUT_DIR/stage{N}.pt again, replacing it")
    p.add_argument("--steps", type=data.bounded_int(1, 10**7), default=None, help="optimizer steps (the recipe's)")
    p.add_argument("--batch-size", type=data.bounded_int(1, 4096), default=None, help="utterances per step (each)")
    p.add_argument("--grad-accum", type=data.bounded_int(1, 1024), default=1, help="micro-batches per step")
    p.add_argument("--lr", type=data.positive_float, default=None, help="peak learning rate (default: the recipe's)")
    p.add_argument("--lora-rank", type=data.bounded_int(0, 1024), default=None, help="stage 2: train LoRA "
                   "adapters of this rank instead of the whole decoder (0 = the paper's full fine-tune)")
    p.add_argument("--eval-every", type=data.positive_int, default=500, help="steps between dev loss / dev WER")
    p.add_argument("--ckpt-every", type=data.positive_int, default=500, help="steps between checkpoints")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--seed", type=data.nonneg_int, default=1337, help="random seed")
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p, args):
    """What argparse's types cannot see: flags that contradict each other or this machine."""
    if args.resume and args.overwrite:
        p.error("--resume and --overwrite contradict each other: --resume continues OUT_DIR/stage{N}.pt, "
                "--overwrite starts it again; pass one")
    if args.stage == 0 and args.init:
        p.error("--init is for stages 1 and 2 (stage 0 starts fresh from --whisper and --preset)")
    if args.stage > 0 and args.whisper:
        p.error("--whisper is for stage 0: stages 1 and 2 keep the encoder of the checkpoint they start from")
    if args.stage != 2 and args.lora_rank is not None:
        p.error("--lora-rank is for stage 2 (the stage that fine-tunes the decoder)")
    if problem := data.device_problem(args.device) or data.path_problem(args.out_dir, "--out-dir"):
        p.error(problem)


def starting_checkpoint(args) -> tuple[Path, dict] | None:
    """The checkpoint this stage starts from, (path, checkpoint): --resume: this stage's own; stage 0: none;
    otherwise --init or the previous stage's, which must be finished (unless given with --init)."""
    own = stage_path(args.out_dir, args.stage)
    if args.resume:
        if not own.is_file():
            raise SystemExit(f"--resume: {own} does not exist; start without --resume")
        return own, W.read_checkpoint(own)
    if own.exists() and not args.overwrite:
        raise SystemExit(f"{own} exists: pass --resume to continue it or --overwrite to start again (or choose "
                         f"another --out-dir)")
    if args.stage == 0:
        return None
    init = Path(args.init or stage_path(args.out_dir, args.stage - 1))
    if not init.exists():
        raise SystemExit(f"{init} is missing: stage {args.stage} starts from stage {args.stage - 1}. Run `python "
                         f"train.py --stage {args.stage - 1} --out-dir {args.out_dir}` first (or pass --init PATH).")
    ckpt = W.read_checkpoint(init)
    if ckpt.get("stage") not in (None, args.stage - 1):  # a checkpoint of other code may not say its stage
        raise SystemExit(f"{init} holds stage {ckpt.get('stage')}: stage {args.stage} starts from a stage "
                         f"{args.stage - 1} checkpoint (`python train.py --stage {args.stage - 1}` writes it)")
    if msg := W.unfinished_note(init, ckpt):
        if not args.init:
            raise SystemExit(msg + ", or pass it as --init to start from it as it is")
        data.warn(msg)
    return init, ckpt


def apply_recipe(args, start):
    """Fill what the command line left open from RECIPES[preset][stage]: stage 0's --preset ("default"), or the one
    the checkpoint a later stage starts from was trained with. A --resume may not change what shapes the model."""
    saved = (start[1].get("args") or {}) if start else {}
    if args.preset and saved.get("preset") not in (None, args.preset):
        raise SystemExit(f"--preset {args.preset}, but {start[0]} was trained with --preset {saved['preset']}: "
                         f"stage {args.stage} continues its checkpoint's preset; leave --preset out")
    if args.resume:
        cfg = start[1].get("config", {})
        for flag, now, then in (("--whisper", args.whisper, cfg.get("whisper")),
                                ("--lora-rank", args.lora_rank, cfg.get("lora", {}).get("rank"))):
            if now is not None and now != then:
                raise SystemExit(f"--resume: {flag} {now} would change the model {start[0]} holds ({then}); "
                                 f"leave it out, or start the stage again with --overwrite")
    args.preset = args.preset or saved.get("preset") or (start and preset_of(start[1].get("config"))) or "default"
    recipe = {"speed_perturb": (), "dropout": 0.0, "time_masks": 0, "vocab_from_corpus": False,
              "lr": STAGES[args.stage]["lr"], **RECIPES[args.preset][args.stage]}
    for key, value in recipe.items():  # --resume: as the interrupted run had it, so Ctrl-C's command goes on
        if getattr(args, key, None) is None:
            setattr(args, key, saved.get(key, value) if args.resume else value)


def preset_of(config) -> str | None:
    """The preset whose decoder has this config's shape (for a checkpoint that does not name its preset)."""
    shape = ("n_layer", "n_embd", "canvas_len")
    decoder = (config or {}).get("decoder") or {}
    return next((name for name, c in W.PRESETS.items()
                 if all(getattr(c.decoder, k) == decoder.get(k) for k in shape)), None)


def diverged(args, loss, step, last_good):
    """Stop on a non-finite loss, naming the last good checkpoint (or saying there is none) and what to run."""
    where = f"the last good checkpoint is {last_good}; continue from it with a lower learning rate: `python " \
            f"train.py --stage {args.stage} --out-dir {args.out_dir} --resume --lr {args.lr / 10:g}`" if last_good \
        else f"no checkpoint of this stage was written; start it again with a lower learning rate: `python " \
             f"train.py --stage {args.stage} --out-dir {args.out_dir} --overwrite --lr {args.lr / 10:g}`"
    raise SystemExit(f"loss is {loss} at step {step} (the training diverged at --lr {args.lr:g}): stopping; {where}")


@torch.no_grad()
def still_finite(model, batches, shards, step, args, hp, amp) -> bool:
    """Finite weights that still give a finite loss on the next batch (a private generator: the training's random
    numbers stay as they are): a checkpoint is written only then, so a blown-up update is never saved."""
    if not all(p.isfinite().all() for p in model.parameters() if p.requires_grad):
        return False
    idx = shards.batch_at(step * args.grad_accum).to(next(model.parameters()).device)
    g = torch.Generator(device=idx.device).manual_seed(step)
    model.eval()  # no dropout or time masks: they would draw from the training's random numbers
    with amp:
        loss = batch_loss(model, model, batches.get(idx), hp, generator=g).item()
    model.train()
    return math.isfinite(loss)


def corpus_vocab(utts) -> tuple:
    """The Whisper ids of the training transcripts, plus sot and eot (sorted): the cpu recipe's vocabulary."""
    tok = data.get_tokenizer()
    return tuple(sorted({tok.sot, tok.eot} | {i for u in utts for i in tok.encode(" " + data.normalize_text(u.text))}))


@torch.no_grad()
def cache_features(model, utts, device, batch_size=32):
    """Run the frozen encoder once per utterance; keep only the frames that hold audio, in fp16. Returns flat
    (sum of frames, n_audio_state) and n_frames (N,): utterance i is flat[start_i : start_i + n_i]."""
    ds = data.SpeechDataset(utts, model.cfg.decoder.canvas_len, train=False)
    # a private generator: the loader's worker seeds come from it, not from the global RNG, so a run that
    # builds the cache trains exactly as one that finds it on disk
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=data.collate,
                                         num_workers=min(16, os.cpu_count() or 1),
                                         generator=torch.Generator().manual_seed(0))
    feats, frames = [], []
    for mel, n_frames, _ in tqdm(loader, desc="encoder features", disable=not is_master()):
        with decode.autocast(device):
            f = model.embed_audio(mel.to(device))  # (B, 1500, d)
        n_frames = n_frames.clamp(max=f.shape[1])  # a short encoder window (cpu preset) cuts longer audio
        feats += [f[i, :n].half() for i, n in enumerate(n_frames.tolist())]
        frames.append(n_frames)
    return torch.cat(feats), torch.cat(frames).to(device)


def feature_key(model, utts) -> str:
    """The feature cache's name: a hash of every audio file's path, size, mtime and speed, and the encoder's weights."""
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
    """The encoder features of utts: loaded from data/features/<key>.pt if it fits them, or computed and saved
    there. Each run of utterances at one speed (data.speed_perturbed's copies) gets a file of its own."""
    runs = [list(run) for _, run in itertools.groupby(utts, key=lambda u: u.speed)]
    if len(runs) > 1:
        return tuple(torch.cat(t) for t in zip(*(cached_features(model, run, device) for run in runs)))
    t0, loaded = time.time(), None
    path = data.DATA_DIR / "features" / f"{feature_key(model, utts)}.pt"
    if path.exists():
        try:
            flat, n_frames = torch.load(path, map_location=device, weights_only=True)
            loaded = (flat, n_frames) if len(n_frames) == len(utts) and int(n_frames.sum()) == len(flat) else None
        except Exception:  # a damaged cache file is only a cache: build it again
            pass
        if loaded is None:
            data.warn(f"{path}: damaged feature cache; building it again")
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


def gather_frames(flat, start, n, multiple: int = 1):
    """Rows start[i] : start[i] + n[i] of flat (frames, d) as one zero-padded batch (B, T, d), in a few tensor
    operations (not a copy per utterance). T is max n rounded up to a multiple: the GPU's attention kernels are
    planned once per shape, and a new shape at every step costs more than the padding."""
    pos = torch.arange(math.ceil(int(n.max()) / multiple) * multiple, device=flat.device)  # (T,)
    rows = (start[:, None] + pos).clamp(max=len(flat) - 1)  # (B, T) indices into flat
    return flat[rows].masked_fill((pos >= n[:, None])[..., None], 0)


class Shards:
    """Epoch-wise random permutation of range(n); process r of w takes every w-th index (a distributed sampler).

    With lengths (each utterance's encoder frames), each run of `bucket` batches is sorted by length, cut into
    batches and shuffled: a batch is padded to its longest clip, and nearly every random batch would hold a 20-30 s
    one (8 % of the clips). bucket=32: most batches hold similar lengths; an epoch still visits the corpus at random."""

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
    """nanoGPT's way: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; a plain `python train.py` runs one process. Each
    process seeds its random numbers with --seed + its rank. Returns the device."""
    global RANK, WORLD
    device = args.device
    if int(os.environ.get("RANK", -1)) != -1:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        RANK, WORLD = dist.get_rank(), dist.get_world_size()
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            device = f"cuda:{os.environ['LOCAL_RANK']}"
    for seed in (torch.manual_seed, random.seed, np.random.seed):
        seed(args.seed + RANK)
    return device


def any_rank(flag: bool, device) -> bool:
    """True on every rank when it is true on any (e.g. a non-finite loss): all ranks stop together."""
    if WORLD == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def load_utterances(args) -> dict:
    """The train and dev utterances a stage needs (stage 0: only the training transcripts, for --vocab-from-corpus)."""
    train_utts = data.load_split(args.train_split, args.size) if args.stage > 0 or args.vocab_from_corpus else []
    return {"train": train_utts, "dev": data.load_split(args.dev_split, args.size) if args.stage > 0 else []}


def stage_path(out_dir, stage):
    return Path(out_dir) / f"stage{stage}.pt"


def restore(ckpt, optimizer, ema, device, args):
    """Where an interrupted stage stopped: optimizer state and RNG restored; returns step and EMA. Flags that
    decide the data order or the schedule and differ from the interrupted run's get a warning."""
    before = ckpt.get("args") or {}
    changed = [f"--{k.replace('_', '-')} {before[k]} -> {getattr(args, k)}" for k in
               ("batch_size", "grad_accum", "steps", "lr", "seed", "size", "train_split")
               if k in before and before[k] != getattr(args, k)]
    if changed:
        data.warn(f"--resume with other flags than the interrupted run ({', '.join(changed)}): it goes on with "
                  f"the new ones, so it will not end where the uninterrupted run would")
    optimizer.load_state_dict(ckpt["optimizer"])
    ema = {k: v.to(device) for k, v in ckpt["ema"].items()} if ckpt.get("ema") else ema
    torch.set_rng_state(ckpt["rng"]["torch"])
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
    log(f"resumed at step {ckpt['step']}")
    return ckpt["step"], ema


def save_checkpoint(args, raw, optimizer, step, ema, finished) -> Path:
    """Everything needed to continue (model, optimizer, step, stage, finished or not, RNG, EMA), atomically; -> path."""
    path = stage_path(args.out_dir, args.stage)
    if is_master():
        cuda = {"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {}
        rng = {"torch": torch.get_rng_state(), **cuda}  # training draws its random numbers from torch alone
        W.save_model(path, raw, optimizer=optimizer.state_dict(), step=step, stage=args.stage, args=vars(args),
                     rng=rng, ema=ema, finished=finished)
    return path


@contextmanager
def out_dir_lock(out_dir):
    """One training run per --out-dir at a time: OUT_DIR/train.lock holds the holder's pid and host, made with
    O_EXCL so two runs cannot both take it. A lock whose process is gone (same host) is stale and taken over."""
    path = Path(out_dir) / "train.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid, _, host = path.read_text().strip().partition(" ")
            empty = not pid and time.time() - path.stat().st_mtime > 10  # its run died before writing its pid
            if not empty and (host != socket.gethostname() or not pid.isdigit() or pid_alive(int(pid))):
                raise SystemExit(f"{path.parent} is in use by another training run (process {pid} on {host}): wait "
                                 f"for it, or choose another --out-dir. If no such run exists, delete {path}") from None
            data.warn(f"{path}: a stale lock of process {pid or '?'}, which has ended; taking it over")
            path.unlink(missing_ok=True)
    else:
        raise SystemExit(f"{path}: could not take the lock; delete it and run again")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        yield
    finally:
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 delivers nothing: it only asks whether the process exists
    except OSError as e:  # a PermissionError: it exists, under another user
        return not isinstance(e, ProcessLookupError)
    return True


@contextmanager
def stop_on_ctrl_c():
    """The first Ctrl-C asks the loop to stop at the end of the current step (it then saves a checkpoint); a
    second one stops at once. Only the main thread can install a signal handler: elsewhere this does nothing."""
    state = {"asked": False}

    def ask(*_):
        if state["asked"]:
            raise KeyboardInterrupt
        state["asked"] = True
        log("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)")
    try:
        previous = signal.signal(signal.SIGINT, ask)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield state
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class Logbook:
    """The progress bar, and one CSV row (stageN_log.csv) per LOG_EVERY steps (throughput) or dev evaluation.
    A fresh start keeps an earlier run's log as stageN_log.prev.csv."""
    FIELDS = ["step", "loss", "lr", "dev_loss", "dev_wer", "utt_per_s"]
    LOG_EVERY = 50

    def __init__(self, args, step, canvas_len):
        self.args, self.canvas_len, self.path = args, canvas_len, Path(args.out_dir) / f"stage{args.stage}_log.csv"
        if is_master() and (step == 0 or not self.path.exists()):
            if self.path.exists():
                os.replace(self.path, self.path.with_suffix(".prev.csv"))
            W.atomic_write(self.path, lambda tmp: tmp.write_text(",".join(self.FIELDS) + "\n"))
        self.bar = tqdm(total=args.steps, initial=step, disable=not is_master(), desc=f"stage {args.stage}")
        self.t_last, self.seen = time.time(), 0

    def step(self, step, loss, lr) -> dict:
        """Count the step; -> what this step logs: the throughput every LOG_EVERY steps, else nothing."""
        self.seen += self.args.batch_size * self.args.grad_accum * WORLD
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}")
        if step % self.LOG_EVERY and step != self.args.steps:
            return {}
        rate, self.t_last, self.seen = self.seen / (time.time() - self.t_last), time.time(), 0
        log(f"throughput {rate:.0f} utterances/s = {rate * self.canvas_len:.0f} canvas tokens/s")
        return {"utt_per_s": round(rate, 1)}

    def write(self, step, loss, lr, logged):
        """One CSV row and console line, when this step logged something (throughput or dev metrics)."""
        if is_master() and logged:
            row = {"step": step, "loss": round(loss, 4), "lr": lr, **logged}
            self.bar.write(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            with open(self.path, "a") as f:
                csv.DictWriter(f, self.FIELDS).writerow(row)

    def close(self, device):
        self.bar.close()
        if device.startswith("cuda"):
            log(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB on "
                f"{torch.cuda.get_device_name()}")


@contextmanager
def swap_in(model, ema):
    """Temporarily put the EMA weights into the model (for evaluation)."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if n in (ema or {})}
    model.load_state_dict(ema or {}, strict=False)  # copies into the parameters with these names
    try:
        yield
    finally:
        model.load_state_dict(saved, strict=False)


def main(argv=None):
    args = get_args(argv)
    try:
        return train(args)
    except KeyboardInterrupt as e:  # Ctrl-C: the loop saved what was finished (stop_on_ctrl_c); say where it is
        raise SystemExit(str(e) or f"interrupted (Ctrl-C); the last checkpoint in {args.out_dir} is intact: "
                                   f"continue with --resume") from None
    except data.AudioError as e:  # from a data-loader worker the message carries its traceback: keep the last line
        raise SystemExit(f"error: {str(e).strip().splitlines()[-1].split('AudioError: ')[-1]}") from None
    except (FileNotFoundError, ValueError, data.DataError) as e:  # bad input: W.CheckpointError, data's readers
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # a read-only folder, a file where a folder should be, a full disk
        raise SystemExit(f"error: {data.os_error(e, f'--out-dir {args.out_dir} or the data folder {data.DATA_DIR}')}"
                         ) from None
    except RuntimeError as e:  # out of memory: the GPU's OutOfMemoryError, or the CPU allocator's failure
        if not isinstance(e, torch.cuda.OutOfMemoryError) and "alloc" not in str(e).lower():
            raise
        raise SystemExit(f"out of memory at --batch-size {args.batch_size} ({str(e).splitlines()[0][:80]}): try "
                         f"--batch-size {max(1, args.batch_size // 2)} --grad-accum {args.grad_accum * 2}") from None
    finally:
        if dist.is_available() and dist.is_initialized():
            # the DDP wrapper sits in a reference cycle, so it outlives train(): free it (its gradient reducer
            # holds the process group) now, not while the interpreter shuts down, where gloo can abort the process
            gc.collect()
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
