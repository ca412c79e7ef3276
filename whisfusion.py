"""
Whisfusion (Kwon et al. 2025, arXiv 2508.07048): a frozen Whisper encoder feeds a masked text-diffusion decoder
through a cross-attention adapter in every block. This file is the whole model:

    mel (B, 80, 3000) --Whisper encoder (frozen)--> audio features (B, 1500, d_enc)
        --adapter projection + per-block K/V (computed once per utterance)--> AudioContext
    canvas x_t (B, L) of token ids, some of them [MASK]
        --embedding--> N x [ self-attention (bidirectional, RoPE) -> cross-attention adapter -> SwiGLU MLP ]
        --RMSNorm, head--> logits (B, L, vocab) for every position: the prediction of the clean canvas x_0

plus hand-rolled LoRA, the masked-diffusion forward process and losses, and checkpoints.
"""
import errno
import math
import os
import pickle
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------
# Configs (saved inside every checkpoint)

@dataclass
class EncoderConfig:
    """Whisper's encoder dims, in Whisper's own names (whisper.model.ModelDimensions)."""
    n_mels: int = 80
    n_audio_ctx: int = 1500  # encoder output frames for 30 s; fewer = a shorter window (`Whisfusion.embed_audio`)
    n_audio_state: int = 384  # tiny.en 384, base 512, small 768
    n_audio_head: int = 6
    n_audio_layer: int = 4


@dataclass
class DecoderConfig:
    """The masked diffusion decoder (SMDM's LLaMA-style bidirectional transformer)."""
    n_layer: int = 8
    n_head: int = 8
    n_embd: int = 512
    n_mlp: int = 1408  # SwiGLU hidden width
    canvas_len: int = 128  # fixed token canvas: [sot, text..., eot, eot, ...]
    vocab_size: int = 51864  # Whisper's English tokenizer; the head predicts these ids
    mask_id: int = 51864  # [MASK] = vocab_size: an input-only id (the embedding has one more row than the head)
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0  # on each residual branch in training (a regulariser; SMDM and the paper use none)
    vocab: tuple = ()  # the Whisper ids the decoder reads and writes (sot and eot among them); () = all of them.
    # A narrow task needs only a few dozen: the embedding and the head then have len(vocab) rows (+ [MASK]) and
    # the model maps ids to rows inside (`Whisfusion.rows`, `Whisfusion.head_ids`); canvases stay Whisper ids.


@dataclass
class AdapterConfig:
    """The cross-attention adapter in every block, as in the paper; heads follow the decoder's."""
    feature_dropout: float = 0.0  # dropout on the audio features in training (a regulariser; not in the paper)
    time_masks: int = 0  # training only: per utterance, this many spans of frames zeroed (SpecAugment's time
    time_mask_frames: int = 25  # masking, on the encoder features); each span up to this many frames (0.5 s)


@dataclass
class LoRAConfig:
    rank: int = 0  # 0 = no LoRA: stage 2 fine-tunes the whole decoder, as the paper does (the recipe)
    alpha: float = 32.0  # the update is scaled by alpha / rank
    targets: tuple = ("attn.qkv", "attn.proj", "mlp.w1", "mlp.w2", "mlp.w3")


@dataclass
class WhisfusionConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    whisper: str = "tiny.en"  # which Whisper checkpoint the encoder weights come from

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WhisfusionConfig":
        sub = {"encoder": EncoderConfig, "decoder": DecoderConfig, "adapter": AdapterConfig, "lora": LoRAConfig}
        adapter = dict(d.get("adapter", {}))
        for gone in ("audio_layers", "ctc_weight"):  # options of earlier versions: a checkpoint without them loads
            if adapter.pop(gone, 0):
                raise ValueError(f"adapter.{gone} is set: this version has no audio layers or CTC head")
        d = {**d, "adapter": adapter} if "adapter" in d else d
        kw = {k: sub[k](**v) if k in sub else v for k, v in d.items()}
        if "lora" in kw:
            kw["lora"].targets = tuple(kw["lora"].targets)
        if "decoder" in kw:
            kw["decoder"].vocab = tuple(kw["decoder"].vocab)
        return cls(**kw)


PRESETS = {
    # CPU tests in seconds (the real tiny.en encoder still produces the features)
    "tiny": WhisfusionConfig(decoder=DecoderConfig(n_layer=2, n_head=2, n_embd=64, n_mlp=176, canvas_len=64),
                             lora=LoRAConfig(rank=4, alpha=8.0)),
    # the GPU recipe: 8 x 512, about 87 M parameters with the 51k-token embedding and head, on Whisper-base's
    # encoder (the largest Whisper encoder that can be had offline). train.py reads the encoder's dims from the
    # Whisper checkpoint; the preset states them too, so that a model built from it alone (a benchmark, a test)
    # has the trained model's shapes
    "default": WhisfusionConfig(encoder=EncoderConfig(n_audio_state=512, n_audio_head=8, n_audio_layer=6),
                                adapter=AdapterConfig(feature_dropout=0.1), whisper="base"),
    # the CPU task (TinySpeech `numbers`, `make demo`): 4 x 128, a 16-token canvas, the tiny.en encoder run on a
    # 4 s window instead of 30 s (about 8x less encoder work; every clip of the task is shorter) and an output
    # layer over only the tokens of the training transcripts (train.py's cpu recipe fills decoder.vocab)
    "cpu": WhisfusionConfig(encoder=EncoderConfig(n_audio_ctx=200),
                            decoder=DecoderConfig(n_layer=4, n_head=4, n_embd=128, n_mlp=352, canvas_len=16),
                            whisper="tiny.en"),
}

# ----------------------------------------------------------------------------------------------------------
# Building blocks

class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * w, in fp32 (fp16/bf16 can overflow the mean of squares). On a GPU,
    F.rms_norm computes in fp32 whatever x's dtype, so a bf16 x (decoding) goes in as it is, without the copies
    that x.float() and the cast back would make."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        if x.is_cuda and x.dtype == self.weight.dtype:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def rope_cache(seq_len: int, head_size: int, base: float, device=None):
    """cos, sin of shape (T, head_size) for NeoX-style ("rotate half") rotary positions."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, device=device).float() / head_size)  # (hs/2,)
    angles = torch.outer(torch.arange(seq_len, device=device).float(), inv_freq)  # (T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hs)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x: (..., T, hs). With x1, x2 the two halves of hs: (x1 cos - x2 sin, x2 cos + x1 sin), in x's dtype."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with RoPE; no causal mask: every token sees the whole canvas."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k = apply_rope(qkv[:2], cos, sin)  # rotated together: (B, nh, T, hs)
        v = qkv[2]  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class CrossAttention(nn.Module):
    """The paper's cross-attention adapter: queries from the text, keys/values from the audio; no positions, no gate.

    The audio side (kv_proj of the features) depends only on the utterance, so `audio_kv` computes it once and
    every decoding step and candidate reuses it."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.kv_proj = nn.Linear(cfg.n_embd, 2 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def audio_kv(self, audio):
        """audio: (B, Ta, C) projected features -> k, v: (B, nh, Ta, hs) each."""
        B, Ta, C = audio.shape
        kv = self.kv_proj(audio).view(B, Ta, 2, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (2,B,nh,Ta,hs)
        return kv[0], kv[1]

    def forward(self, x, k, v, mask=None):
        """x: (B*n, T, C); k, v: (B, nh, Ta, hs); mask: (B, 1, 1, Ta) bool, True where a frame holds audio.

        The n rows of x per utterance (decoding candidates, `AudioContext.repeat`) are folded into the query
        length, (B, n*T, C): all n read the same K/V without a copy, each query attending on its own."""
        B, T, C = x.shape
        n = B // k.shape[0]
        q = self.q_proj(x).reshape(B // n, n * T, self.n_head, C // self.n_head).transpose(1, 2)  # (B/n, nh, nT, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B/n, nh, n*T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B*n, T, C)


class SwiGLU(nn.Module):
    """LLaMA MLP: w3(silu(w1 x) * w2 x), no biases."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.n_embd, cfg.n_mlp, bias=False)
        self.w2 = nn.Linear(cfg.n_embd, cfg.n_mlp, bias=False)
        self.w3 = nn.Linear(cfg.n_mlp, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class Block(nn.Module):
    """Pre-norm residual block: self-attention -> cross-attention adapter -> MLP."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.norm_1, self.attn = RMSNorm(cfg.n_embd, cfg.norm_eps), SelfAttention(cfg)
        self.norm_cross, self.cross_attn = RMSNorm(cfg.n_embd, cfg.norm_eps), CrossAttention(cfg)  # the adapter
        self.norm_2, self.mlp = RMSNorm(cfg.n_embd, cfg.norm_eps), SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, kv=None, mask=None):
        x = x + self.drop(self.attn(self.norm_1(x), cos, sin))
        if kv is not None:  # without audio (stage-0 text pretraining) the block is exactly SMDM's
            x = x + self.drop(self.cross_attn(self.norm_cross(x), *kv, mask=mask))
        return x + self.drop(self.mlp(self.norm_2(x)))


def time_mask(features, n_masks: int, max_frames: int, n_frames=None):
    """SpecAugment's time masking, on encoder features (B, Ta, d): per utterance, n_masks spans of up to
    max_frames frames, placed uniformly inside the frames that hold audio, are zeroed."""
    B, Ta, _ = features.shape
    n = torch.full((B,), Ta, device=features.device) if n_frames is None else n_frames.to(features.device)
    width = torch.randint(0, max_frames + 1, (B, n_masks, 1), device=features.device)  # (B, m, 1)
    start = (torch.rand(B, n_masks, 1, device=features.device) * (n[:, None, None] - width).clamp_min(0)).long()
    t = torch.arange(Ta, device=features.device)  # (Ta,)
    hit = ((t >= start) & (t < start + width)).any(1)  # (B, Ta)
    return features.masked_fill(hit[..., None], 0.0)


def repeat_rows(t, n: int):
    """(B, ...) -> (B*n, ...): each row n times in a row; a view for B = 1, and no host sync (CUDA graphs)."""
    return t.unsqueeze(1).expand(t.shape[0], n, *t.shape[1:]).reshape(t.shape[0] * n, *t.shape[1:])


@dataclass
class AudioContext:
    """What the decoder needs of one batch of utterances: per-block (k, v) and the frame mask."""
    kv: list  # kv[i] = (k, v) of block i, each (B, nh, Ta, hs)
    mask: torch.Tensor | None  # (B, 1, 1, Ta) bool, True where a frame holds audio; None: every frame does
    rows_per_utterance: int = 1  # canvas rows (candidates) per utterance: B*n rows of text against B of audio

    def repeat(self, n: int) -> "AudioContext":
        """The context for n canvas rows (candidates) per utterance, in a row. Nothing is copied: cross-attention
        folds the n rows into its queries (`CrossAttention.forward`); copies would multiply the K/V, decoding's
        largest tensors, by n."""
        return replace(self, rows_per_utterance=self.rows_per_utterance * n)

# ----------------------------------------------------------------------------------------------------------
# The model

class Whisfusion(nn.Module):
    def __init__(self, cfg: WhisfusionConfig):
        super().__init__()
        from whisper.model import AudioEncoder
        self.cfg = cfg
        e, d = cfg.encoder, cfg.decoder
        self.encoder = AudioEncoder(e.n_mels, e.n_audio_ctx, e.n_audio_state, e.n_audio_head, e.n_audio_layer)
        self.encoder.requires_grad_(False)  # frozen in every stage
        # adapter input: project the encoder width to the decoder width when they differ (not in the paper,
        # whose Whisper-small and SMDM-170M are both 768 wide)
        self.audio_proj = nn.Linear(e.n_audio_state, d.n_embd, bias=False) if e.n_audio_state != d.n_embd \
            else nn.Identity()
        self.feature_dropout = nn.Dropout(cfg.adapter.feature_dropout)
        n_out = len(d.vocab) or d.vocab_size  # rows of the head: every Whisper id, or only those of `vocab`
        self.wte = nn.Embedding(n_out + 1, d.n_embd)  # + 1 row: [MASK]
        self.blocks = nn.ModuleList([Block(d) for _ in range(d.n_layer)])
        self.ln_f = RMSNorm(d.n_embd, d.norm_eps)
        self.lm_head = nn.Linear(d.n_embd, n_out, bias=False)  # no row for [MASK]: it is never predicted
        self._init_vocab(d)
        cos, sin = rope_cache(d.canvas_len, d.n_embd // d.n_head, d.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    def _init_vocab(self, d: DecoderConfig):
        """The restricted vocabulary as two lookups (buffers, rebuilt from the config, not saved):
        head_ids (n_out,): head row -> Whisper id; id_to_row (vocab_size + 1,): Whisper id -> row, [MASK] -> the
        last embedding row, an id outside the vocabulary -> -1. Full vocabulary: both are the identity."""
        if not d.vocab:
            self.register_buffer("head_ids", torch.arange(d.vocab_size), persistent=False)
            self.id_to_row = None
            return
        ids = torch.tensor(sorted(set(d.vocab)))
        if len(ids) != len(d.vocab) or ids.min() < 0 or ids.max() >= d.vocab_size:
            raise ValueError(f"vocab must hold distinct Whisper ids in [0, {d.vocab_size}); got {len(d.vocab)} "
                             f"ids, {len(ids)} distinct, range {ids.min().item()}..{ids.max().item()}")
        id_to_row = torch.full((d.vocab_size + 1,), -1)
        id_to_row[ids] = torch.arange(len(ids))
        id_to_row[d.mask_id] = len(ids)
        self.register_buffer("head_ids", ids, persistent=False)
        self.register_buffer("id_to_row", id_to_row, persistent=False)

    def rows(self, ids, strict: bool = True):
        """Whisper ids (any shape) -> rows of the embedding/head (what the losses take as targets). The identity
        with the full vocabulary; an id outside a restricted vocabulary is an error, or with strict=False -100
        (cross-entropy's ignore_index: a dev text may hold a word that no training transcript had)."""
        if self.id_to_row is None:
            return ids
        rows = self.id_to_row[ids]
        if not strict:
            return rows.masked_fill(rows < 0, -100)
        if (rows < 0).any():
            bad = sorted(set(ids[rows < 0].tolist()))[:5]
            raise ValueError(f"token ids {bad} are not in the model's vocabulary ({len(self.head_ids)} ids, "
                             f"decoder.vocab); the text holds words the training transcripts never had")
        return rows

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)) and not isinstance(m, LoRALinear):
            nn.init.normal_(m.weight, std=0.02)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # the frozen encoder never leaves eval mode
        return self

    @torch.no_grad()
    def embed_audio(self, mel):
        """mel (B, n_mels, 3000) -> Whisper features (B, n_audio_ctx, n_audio_state), frozen, no gradients: 1500
        frames for 30 s, or with a shorter window (the `cpu` preset) those of the first 2 * n_audio_ctx mel frames."""
        return self.encoder(mel[..., :2 * self.cfg.encoder.n_audio_ctx])

    def audio_context(self, features, n_frames=None, n_ctx=None) -> AudioContext:
        """Features (B, Ta, n_audio_state) -> per-block K/V, computed once per utterance.

        n_frames (B,): frames that hold audio; cross-attention ignores the rest (the 30 s padding) and the
        features are cut to the longest clip in the batch, or to n_ctx frames when given: a fixed shape for
        CUDA graphs, which cannot read n_frames.max() back from the GPU, and for training, whose batches are
        rounded to a few lengths (`train.gather_frames`)."""
        mask = None
        if n_frames is not None:
            n_frames = n_frames.clamp(max=features.shape[1])  # audio past a short encoder window is cut
            Ta = int(n_frames.max()) if n_ctx is None else n_ctx  # read before the copy to the GPU: no sync
            n_frames = n_frames.to(features.device)
            features = features[:, :Ta]
            mask = (torch.arange(Ta, device=features.device) < n_frames[:, None])[:, None, None, :]  # (B,1,1,Ta)
        if self.training and self.cfg.adapter.time_masks:
            features = time_mask(features, self.cfg.adapter.time_masks, self.cfg.adapter.time_mask_frames, n_frames)
        audio = self.feature_dropout(self.audio_proj(features.to(self.wte.weight.dtype)))  # (B, Ta, n_embd)
        return AudioContext([blk.cross_attn.audio_kv(audio) for blk in self.blocks], mask)

    def forward(self, tokens, ctx: AudioContext | None = None, where=None):
        """tokens (B, L) Whisper ids with [MASK] at the positions to predict -> logits (B, L, n_out) over the
        head rows (n_out = vocab_size, or len(vocab): then head_ids[row] is the Whisper id).

        where (B, L) bool: logits only at those positions, (N, n_out). Training needs only the masked positions,
        and the head (512 x 51,864) is the largest matrix product of a step and its logits the largest tensor."""
        B, L = tokens.shape
        if ctx is not None and B != ctx.kv[0][0].shape[0] * ctx.rows_per_utterance:
            raise ValueError(f"{B} canvas rows for {ctx.kv[0][0].shape[0]} utterances x {ctx.rows_per_utterance} "
                             f"rows each: repeat the audio context (AudioContext.repeat) to match")
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        x = self.wte(tokens if self.id_to_row is None else self.id_to_row[tokens])  # (B, L, C)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, None if ctx is None else ctx.kv[i], None if ctx is None else ctx.mask)
        x = self.ln_f(x)
        return self.lm_head(x if where is None else x[where])  # (B, L, n_out), or (N, n_out)

# ----------------------------------------------------------------------------------------------------------
# Parameter groups: which parts train in which stage

def is_adapter(name: str) -> bool:
    return "cross_attn" in name or "norm_cross" in name or name.startswith("audio_proj")


def set_trainable(model: Whisfusion, stage: int):
    """Stage 0: the decoder (no adapter, no encoder). Stage 1: the adapter only. Stage 2: adapter + LoRA, or
    adapter + the whole decoder when the model has no LoRA (the paper's full fine-tune)."""
    has_lora = any("lora_" in n for n, _ in model.named_parameters())
    for name, p in model.named_parameters():
        if name.startswith("encoder."):
            p.requires_grad = False
        elif stage == 0:
            p.requires_grad = not is_adapter(name) and "lora_" not in name
        elif stage == 1:
            p.requires_grad = is_adapter(name)
        else:
            p.requires_grad = is_adapter(name) or ("lora_" in name if has_lora else True)


def param_counts(model: Whisfusion) -> dict:
    """Parameters per part: encoder, adapter, lora, decoder (embedding, blocks, head), and trainable."""
    parts = {"encoder": 0, "adapter": 0, "lora": 0, "decoder": 0, "trainable": 0}
    for name, p in model.named_parameters():
        part = "encoder" if name.startswith("encoder.") else "adapter" if is_adapter(name) \
            else "lora" if "lora_" in name else "decoder"
        parts[part] += p.numel()
        parts["trainable"] += p.numel() if p.requires_grad else 0
    return parts


# ----------------------------------------------------------------------------------------------------------
# LoRA (Hu et al. 2021), hand-rolled

class LoRALinear(nn.Linear):
    """y = x W^T + (alpha / r) * x A^T B^T, with W frozen. B starts at zero, so LoRA starts as the identity.

    merge() folds the update into W for fast inference; unmerge() takes it out again. Neither happens
    implicitly: .eval() and .train() never rewrite weights."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__(in_features, out_features, bias=False)
        self.rank, self.scale, self.merged = rank, alpha / rank, False
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.weight.requires_grad = False

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.merged:
            return y
        return y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale  # (.., r) -> (.., out)

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.weight += (self.lora_B @ self.lora_A) * self.scale
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.weight -= (self.lora_B @ self.lora_A) * self.scale
            self.merged = False


def add_lora(model: Whisfusion, cfg: LoRAConfig) -> Whisfusion:
    """Replace the target Linears of every decoder block by LoRALinear (same base weights). rank 0: no-op."""
    if cfg.rank == 0:
        return model
    for blk in model.blocks:
        for target in cfg.targets:
            parent_name, attr = target.rsplit(".", 1)
            parent = blk.get_submodule(parent_name)
            old = getattr(parent, attr)
            new = LoRALinear(old.in_features, old.out_features, cfg.rank, cfg.alpha).to(old.weight.device)
            new.weight.data.copy_(old.weight.data)
            setattr(parent, attr, new)
    return model


def lora_modules(model):
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model):
    for m in lora_modules(model):
        m.merge()


def unmerge_lora(model):
    for m in lora_modules(model):
        m.unmerge()

# ----------------------------------------------------------------------------------------------------------
# The masked diffusion objective (SMDM / MDLM, as the paper trains)

def sample_mask_ratio(batch: int, low: float = 0.0, high: float = 1.0, eps: float = 1e-3, device=None, generator=None):
    """t per sequence, uniform in [low, high], kept in [eps, 1] so that 1/t stays finite."""
    t = low + (high - low) * torch.rand(batch, device=device, generator=generator)
    return t.clamp(eps, 1.0)


def forward_process(x0, t, mask_id: int, generator=None):
    """Corrupt clean canvases x0 (B, L): each position except the start one becomes [MASK] with probability t.

    Returns x_t (B, L) and masked (B, L) bool."""
    masked = torch.rand(x0.shape, device=x0.device, generator=generator) < t[:, None]
    masked[:, 0] = False  # the start token is given, never predicted
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


def masked_token_loss(logits, x0, masked):
    """The paper's stage 1 and 2 loss: mean cross-entropy over the masked tokens (no 1/t weight).

    logits (B, L, V), or (N, V) already at the masked positions (`model(x_t, ctx, where=masked)`)."""
    logits = logits[masked] if logits.dim() == 3 else logits
    return F.cross_entropy(logits.float(), x0[masked])


def elbo_loss(logits, x0, masked, t):
    """Stage-0 loss, SMDM's continuous-time ELBO: sum over masked tokens of CE / t, divided by B * L.

    logits (B, L, V), or (N, V) at the masked positions, as for masked_token_loss."""
    logits = logits[masked] if logits.dim() == 3 else logits
    ce = F.cross_entropy(logits.float(), x0[masked], reduction="none")  # (N,)
    inv_t = (1 / t)[:, None].expand_as(masked)[masked]  # each masked token's 1/t
    return (ce * inv_t).sum() / x0.numel()

# ----------------------------------------------------------------------------------------------------------
# Building and checkpoints

def build_model(cfg: WhisfusionConfig, encoder_weights: dict | None = None) -> Whisfusion:
    """A fresh model with LoRA slots; encoder_weights: an openai-whisper state dict (its encoder.* keys load)."""
    model = add_lora(Whisfusion(cfg), cfg.lora)
    if encoder_weights is not None:
        load_encoder(model, encoder_weights)
    return model


def load_encoder(model: Whisfusion, whisper_state: dict):
    """Load only the encoder.* keys of a Whisper checkpoint, strictly (every key, every shape)."""
    enc = {k[len("encoder."):]: v.float() for k, v in whisper_state.items() if k.startswith("encoder.")}
    enc["positional_embedding"] = enc["positional_embedding"][:model.cfg.encoder.n_audio_ctx]  # a short window
    model.encoder.load_state_dict(enc, strict=True)


def whisper_encoder_dims(ckpt_path) -> tuple[EncoderConfig, dict]:
    """(EncoderConfig, state dict) of an openai-whisper .pt file."""
    ckpt = read_checkpoint(ckpt_path, "Whisper checkpoint")
    if "config" in ckpt and "model" in ckpt:
        raise CheckpointError(f"{ckpt_path} is a Whisfusion checkpoint, not a Whisper one: pass it as --init "
                              f"(train.py) or --ckpt (decode.py), and as --whisper tiny.en, base or a Whisper .pt")
    if not isinstance(ckpt.get("dims"), dict) or not isinstance(ckpt.get("model_state_dict"), dict):
        raise CheckpointError(f"{ckpt_path} is not an openai-whisper checkpoint (no 'dims' and "
                              f"'model_state_dict'): pass tiny.en, base or a .pt written by openai-whisper")
    dims = ckpt["dims"]
    names = [f.name for f in fields(EncoderConfig)]
    if missing := [k for k in names if k not in dims]:
        raise CheckpointError(f"{ckpt_path}: its 'dims' lack {missing}: not an openai-whisper checkpoint")
    return EncoderConfig(**{k: dims[k] for k in names}), ckpt["model_state_dict"]


def config_diff(a: dict, b: dict, prefix="") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb and not (isinstance(va, (list, tuple)) and list(va) == list(vb or [])):
            out.append(f"{prefix}{k}: {va} != {vb}")
    return out


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to pass instead."""


class WriteError(OSError):
    """A file that could not be written (a read-only folder, a full disk, a name too long, ...); str() is one
    line naming the file and the fix. An OSError, so `except OSError` catches it."""

    def __str__(self):
        return os_problem(self)


OS_FIXES = {  # errno -> the fix, for `os_problem`
    **dict.fromkeys((errno.EACCES, errno.EPERM), "make it writable or choose another folder"),
    errno.EROFS: "choose another folder or make it writable",
    **dict.fromkeys((errno.ENOSPC, errno.EDQUOT), "free some space or choose another folder"),
    errno.EFBIG: "raise the file size limit (ulimit -f) or choose another folder",
    errno.ENAMETOOLONG: "use a shorter name",
    **dict.fromkeys((errno.ENOTDIR, errno.EEXIST), "a file stands where a folder should be: choose another path"),
    errno.EISDIR: "a folder stands at that path: choose another name",
    errno.ENOENT: "check the path: a folder on it may be missing"}


def os_problem(e: OSError) -> str:
    """An OSError as one line: the file, what happened, and the fix where the errno tells it."""
    what = e.strerror or (str(e.args[0]) if e.args else type(e).__name__)
    return ": ".join(str(s) for s in (e.filename, what, OS_FIXES.get(e.errno)) if s)


def atomic_write(path, write):
    """write(tmp) into a temporary file named after this process, then rename it to path: a crash never leaves a
    half-written file, and two runs writing the same path never share a temporary file. Every failure, an
    OSError or a writer's RuntimeError, is a WriteError naming path; the previous file at path stays as it was."""
    tmp = Path(path).with_name(f"{Path(path).name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(e.errno, e.strerror or str(e), str(path)) from None
    except RuntimeError as e:  # torch.save, soundfile: "cannot be opened", "write failed", without the errno
        try:  # extending the same file from Python fails the same way, with the errno
            with open(tmp, "ab") as f:
                f.write(bytes(1 << 20))  # more than a full disk has left after the writer's failure
        except OSError as cause:
            raise WriteError(cause.errno, cause.strerror, str(path)) from None
        reason = str(e).strip().partition("\n")[0] or type(e).__name__
        raise WriteError(None, f"cannot be written ({reason}): check that its folder is writable and has free "
                               f"space", str(path)) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a name too long or a folder that takes no files: no temporary file was made
            pass


def atomic_save(obj, path):
    """torch.save, atomically (`atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_checkpoint(path, what="checkpoint") -> dict:
    """torch.load(weights_only=True) of a dict, every failure turned into one line naming the file."""
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise CheckpointError(f"{what} {path} is a directory; pass the .pt file inside it")
        raise FileNotFoundError(f"{what} {path} does not exist (train one with `python train.py --stage 0`)")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes; an interrupted copy?): copy it again or retrain")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():
            raise CheckpointError(f"{what} {path} holds Python objects besides tensors and was refused (loading "
                                  f"it could run code): use a checkpoint written by train.py") from None
        raise CheckpointError(f"{what} {path} is not a PyTorch checkpoint (random or damaged bytes): copy it "
                              f"again or retrain") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        reason = str(e).split(".")[0] or type(e).__name__
        raise CheckpointError(f"{what} {path} is truncated or damaged ({reason}): copy it again or retrain "
                              f"(train.py resumes from the last good checkpoint with --resume)") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{what} {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def save_model(path, model: Whisfusion, **extra):
    """Config + weights (the frozen encoder included, so a checkpoint stands alone), written atomically."""
    atomic_save({"config": model.cfg.to_dict(), "model": model.state_dict(), **extra}, path)


def load_model(path, device="cpu", expect: WhisfusionConfig | None = None, ckpt: dict | None = None
               ) -> tuple[Whisfusion, dict]:
    """(model, checkpoint dict) from a checkpoint (`read_checkpoint`, unless the caller has read it: `ckpt`). With
    `expect`, a config that differs is an error naming the fields; a file that is not a Whisfusion checkpoint is a
    CheckpointError naming the fix."""
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    if "config" not in ckpt or "model" not in ckpt:
        if "dims" in ckpt and "model_state_dict" in ckpt:
            raise CheckpointError(f"{path} is an openai-whisper checkpoint, not a Whisfusion one: pass it as --whisper "
                                  f"to `train.py --stage 0`; --ckpt and --init take a stageN.pt written by train.py")
        raise CheckpointError(f"{path} is not a Whisfusion checkpoint (no 'config' and 'model'): pass a "
                              f"stageN.pt written by train.py")
    try:
        cfg = WhisfusionConfig.from_dict(ckpt["config"])
    except (TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{path}: its config does not fit this code ({e}): it was written by another "
                              f"version of whisfusion.py; retrain it or check out that version") from None
    if expect is not None and (diff := config_diff(expect.to_dict(), cfg.to_dict())):
        raise CheckpointError(f"{path}: config does not match; differing fields (expected != checkpoint): "
                              + "; ".join(diff))
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: its weights do not fit its config ({first[-1].strip() if first else e}): "
                              f"the file is damaged or from another version; retrain it") from None
    return model.to(device), ckpt


def checkpoint_problem(path, ckpt: dict, model=None, stages=None) -> str | None:
    """Why a loaded checkpoint must not be used, as one line naming the file and the fix, or None: weights with
    NaN or inf (`model`, as the caller will use it: EMA weights copied in), or a stage not in `stages`. A
    checkpoint that does not say its stage passes: it cannot be told."""
    bad = [n for n, t in (model.state_dict() if model is not None else {}).items()
           if t.is_floating_point() and not t.isfinite().all()]  # parameters and buffers
    if bad:
        return (f"{path}: its weights hold NaN or inf ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): "
                f"the training diverged; train that stage again with a lower --lr")
    stage = ckpt.get("stage")
    if stages is not None and stage is not None and stage not in stages:
        need = " or ".join(f"stage{s}.pt" for s in stages)
        why = " (its decoder has only read text, never heard audio)" if stage == 0 else ""
        return (f"{path} is a stage-{stage} checkpoint{why}: pass {need} (`python train.py --stage "
                f"{min(stages)}` writes it)")
    return None


def unfinished_note(path, ckpt: dict) -> str | None:
    """A warning for a checkpoint whose stage stopped before its last step (interrupted), with the command that
    finishes it; None for a finished one or one that does not say."""
    if ckpt.get("finished") is not False:
        return None
    steps = (ckpt.get("args") or {}).get("steps")
    return (f"{path} is unfinished (stage {ckpt.get('stage')} stopped at step {ckpt.get('step')}"
            + (f" of {steps}" if steps else "") + f"): finish it with `python train.py --stage {ckpt.get('stage')} "
            f"--out-dir {Path(path).parent} --resume`")
