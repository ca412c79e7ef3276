"""The CPU task: a restricted output vocabulary, a short encoder window, the `numbers` grammar corpus."""
import numpy as np
import pytest
import torch

import data
import decode
import train
import whisfusion as W
from conftest import expected_param_counts
from tools import tinyspeech, tts

VOCAB_WORDS = "set a timer for five minutes go forward ten meters".split()


@pytest.fixture(scope="module")
def vocab():
    tok = data.get_tokenizer()
    return tuple(sorted({tok.sot, tok.eot} | {i for w in VOCAB_WORDS for i in tok.encode(" " + w)}))


@pytest.fixture(scope="module")
def full_and_restricted(tiny_cfg, tiny_en_state, vocab):
    """A full-vocabulary model and the same weights sliced to `vocab` (embedding rows + [MASK], head rows)."""
    torch.manual_seed(0)
    full = W.build_model(tiny_cfg, tiny_en_state[1]).eval()
    cfg = W.WhisfusionConfig.from_dict(tiny_cfg.to_dict())
    cfg.decoder.vocab = vocab
    small = W.build_model(cfg).eval()
    ids = torch.tensor(vocab)
    state = full.state_dict()
    state["wte.weight"] = torch.cat([state["wte.weight"][ids], state["wte.weight"][-1:]])  # last row: [MASK]
    state["lm_head.weight"] = state["lm_head.weight"][ids]
    small.load_state_dict(state, strict=True)
    return full, small, ids


def canvases(vocab, L, n=3):
    texts = ["set a timer for five minutes", "go forward ten meters", "five five ten"][:n]
    return torch.tensor([data.make_canvas(t, L) for t in texts])


def test_restricted_logits_are_the_full_logits_sliced(full_and_restricted, vocab, tiny_en_state):
    full, small, ids = full_and_restricted
    assert small.lm_head.weight.shape[0] == len(vocab) and small.wte.weight.shape[0] == len(vocab) + 1
    x0 = canvases(vocab, full.cfg.decoder.canvas_len)
    t = torch.tensor([0.3, 0.6, 1.0])
    xt, masked = W.forward_process(x0, t, full.cfg.decoder.mask_id)
    feats = torch.randn(3, 40, tiny_en_state[0].n_audio_state)
    with torch.no_grad():
        lf = full(xt, full.audio_context(feats, torch.tensor([40, 30, 20])))
        ls = small(xt, small.audio_context(feats, torch.tensor([40, 30, 20])))
    torch.testing.assert_close(ls, lf[..., ids], rtol=1e-5, atol=1e-5)
    # argmax over the head rows, mapped back to Whisper ids = the full model's argmax among those ids
    assert torch.equal(small.head_ids[ls.argmax(-1)], ids[lf[..., ids].argmax(-1)])
    # the losses on targets mapped to head rows = the losses of the full logits restricted to the vocabulary
    y_full = torch.searchsorted(ids, x0)  # position of each target among the vocabulary ids
    assert torch.equal(small.rows(x0), y_full)
    torch.testing.assert_close(W.masked_token_loss(ls, small.rows(x0), masked),
                               W.masked_token_loss(lf[..., ids], y_full, masked))
    torch.testing.assert_close(W.elbo_loss(ls, small.rows(x0), masked, t), W.elbo_loss(lf[..., ids], y_full, masked, t))


def test_restricted_pdd_equals_full_pdd_with_other_ids_excluded(full_and_restricted, tiny_en_state):
    """generate() maps head rows back to Whisper ids: same tokens as the full model whose logits outside the
    vocabulary are -inf."""
    full, small, ids = full_and_restricted
    outside = torch.ones(full.cfg.decoder.vocab_size, dtype=torch.bool)
    outside[ids] = False
    hook = full.lm_head.register_forward_hook(lambda m, i, out: out.masked_fill(outside, -1e9))
    feats, n = torch.randn(2, 40, tiny_en_state[0].n_audio_state), torch.tensor([40, 25])
    try:
        opts = decode.DecodeOptions(candidates=3, steps=3)
        tf, sf = decode.generate(full, full.audio_context(feats, n), opts)
        ts, ss = decode.generate(small, small.audio_context(feats, n), opts)
    finally:
        hook.remove()
    assert torch.equal(tf, ts) and set(ts.unique().tolist()) <= set(ids.tolist())
    torch.testing.assert_close(sf, ss)


def test_out_of_vocabulary_ids_are_an_error_or_ignored(full_and_restricted):
    _, small, _ = full_and_restricted
    x = torch.tensor([[data.get_tokenizer().encode(" hello")[0]]])
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        small.rows(x)
    assert small.rows(x, strict=False).item() == -100  # cross-entropy's ignore_index (dev loss)
    with pytest.raises(ValueError, match="distinct Whisper ids"):
        W.build_model(W.WhisfusionConfig(decoder=W.DecoderConfig(n_layer=1, n_head=1, n_embd=8, n_mlp=8,
                                                                 vocab=(3, 3, 5))))


def test_dev_text_with_words_the_model_cannot_write_is_scored_without_them(full_and_restricted):
    """A dev split may hold words no training transcript had (e.g. `--dev-split real` for the CPU task): the dev
    loss skips them instead of crashing the run before its checkpoint."""
    _, small, _ = full_and_restricted
    L = small.cfg.decoder.canvas_len
    known, unknown = canvases(None, L, n=2), torch.tensor([data.make_canvas("hello wonderful world", L)])
    args = type("Args", (), {"stage": 0, "batch_size": 8})()
    amp = torch.autocast("cpu", enabled=False)
    try:
        loss = train.dev_metrics(small, train.TextBatches(torch.cat([known, unknown])), args, "cpu", amp)["dev_loss"]
    finally:
        small.eval()  # dev_metrics hands the model back in training mode; the other tests use it in eval mode
    assert np.isfinite(loss)


def test_restricted_checkpoint_round_trips_with_its_vocab(full_and_restricted, vocab, tmp_path):
    _, small, _ = full_and_restricted
    W.save_model(tmp_path / "m.pt", small)
    loaded, ckpt = W.load_model(tmp_path / "m.pt")
    assert loaded.cfg.decoder.vocab == vocab and tuple(ckpt["config"]["decoder"]["vocab"]) == vocab
    assert torch.equal(loaded.head_ids, small.head_ids)
    for k, v in small.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    counts, want = W.param_counts(loaded), expected_param_counts(loaded.cfg)
    assert counts["decoder"] == want["decoder"]


def test_corpus_vocab_and_stage0_text_stay_inside_it():
    utts = [data.Utterance("a", "a.flac", "go forward ten meters"), data.Utterance("b", "b.flac", "dial five")]
    vocab = train.corpus_vocab(utts)
    tok = data.get_tokenizer()
    assert tok.sot in vocab and tok.eot in vocab and len(vocab) == 2 + 6
    some = [data.Utterance(str(i), "x.flac", t) for i, t in enumerate(data.grammar_sentences("train", "numbers")[:200])]
    vocab = train.corpus_vocab(some)
    rows = train.text_canvases("train", 16, "numbers", vocab)  # grammar text, sentences with other words left out
    assert len(rows) > 200 and set(rows.unique().tolist()) <= set(vocab)


def test_cpu_preset_encoder_window(tiny_en_state):
    """The cpu preset runs tiny.en on its first 4 s (200 frames): the encoder loads strictly (positions cut),
    features are (B, 200, 384), and longer audio is windowed at 4 s."""
    cfg = W.WhisfusionConfig.from_dict(W.PRESETS["cpu"].to_dict())
    cfg.encoder, sd = tiny_en_state[0], tiny_en_state[1]
    cfg.encoder = W.EncoderConfig(**{**cfg.encoder.__dict__, "n_audio_ctx": W.PRESETS["cpu"].encoder.n_audio_ctx})
    model = W.build_model(cfg, sd).eval()
    assert torch.equal(model.encoder.positional_embedding, sd["encoder.positional_embedding"][:200].float())
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)
    feats = model.embed_audio(data.log_mel(audio)[None])
    assert feats.shape == (1, 200, 384)
    ctx = model.audio_context(feats, torch.tensor([1500]))  # a frame count past the window is clamped
    assert ctx.kv[0][0].shape[2] == 200
    seen = []
    orig = decode.transcribe_features
    decode.transcribe_features = lambda m, f, n, *a, **k: seen.append(len(f)) or ["x"] * len(f)
    try:
        out = decode.transcribe(model, [np.tile(audio, 5)])  # 10 s -> three 4 s windows
    finally:
        decode.transcribe_features = orig
    assert sum(seen) == 3 and out == ["x x x"]


def test_grammar_splits_hold_out_word_combinations():
    plans = {s: tinyspeech.plan_grammar_split(s, n, 0) for s, n in (("train", 1500), ("dev", 48), ("test", 64))}
    texts = {s: {it["text"] for it in items} for s, items in plans.items()}
    assert not texts["test"] & texts["train"] and not texts["dev"] & texts["train"] and not texts["dev"] & texts["test"]
    assert not texts["test"] & set(data.grammar_sentences("train"))  # nor in the stage-0 text
    train_words = {w for t in texts["train"] for w in t.split()}
    assert {w for t in texts["test"] | texts["dev"] for w in t.split()} <= train_words  # only the combinations are new
    assert len(texts["test"]) == 64 and all(len(t.split()) <= 8 for t in texts["test"])


def test_numbers_corpus_voices(tmp_path, monkeypatch):
    """A few utterances of the grammar corpus, built for real: manifests, the held-out voice only in
    test-unseen-voice, which reads the test sentences."""
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    monkeypatch.setitem(data.SIZES, "numbers-mini", dict(train=10, dev=2, test=3, long=0.0, grammar=True))
    monkeypatch.setattr(tts, "VOICES", [v for v in tts.VOICES if v.engine in ("flite", "espeak")])
    hours = tinyspeech.build_corpus("numbers-mini", workers=2)
    assert set(hours) == {"train", "dev", "test", "test-unseen-voice"}
    utts = {s: data.load_split(s, "numbers-mini") for s in hours}
    assert all(u.voice == tts.HELD_OUT_VOICE.name for u in utts["test-unseen-voice"])
    assert not any(u.voice == tts.HELD_OUT_VOICE.name for s in ("train", "dev", "test") for u in utts[s])
    assert [u.text for u in utts["test-unseen-voice"]] == [u.text for u in utts["test"]]
    assert all(0.3 < u.seconds < 6 for s in utts for u in utts[s])
