"""Every notebook runs top to bottom on CPU within its time budget, and ends on the number its text describes.

Each notebook's last cell prints one line `RESULT {json}` (notebooks/_setup.py: `result`); the checks below
are the claims of the notebooks' text, so an output that contradicts the text fails the test. The notebooks
use the CPU-task checkpoints of `make demo` (checkpoints/cpu/); when they are missing, `make cpu-model` makes
them first (about 10 minutes on 2 cores, once).
"""
import json
import os
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CKPT_DIR = Path(os.environ.get("WHISFUSION_CPU_CKPT", ROOT / "checkpoints" / "cpu"))


def _falls(pair):
    first, last = pair
    return last < first


CHECKS = {  # notebook stem -> (description, predicate on the RESULT dict)
    "01_whisper_encoder": ("speech frames stand out from silence; the 4 s window keeps the features",
                           lambda r: r["speech_silence_ratio"] > 1.5 and r["window_cosine"] > 0.9),
    # the share of command words varies between builds of the 2-minute recipe (50-92 % seen): the claim is 40 %
    "02_masked_diffusion": ("stage 0 restores many masked command words (40 % or more), numbers at most half as "
                            "often",
                            lambda r: r["word_acc_t03"] > 0.4 and r["number_acc_t03"] < 0.5 * r["word_acc_t03"]),
    "03_adapter": ("the cross-attention peak of the head chosen on dev moves forward with the tokens",
                   lambda r: r["peak_spearman"] > 0.5 and r["peak_spearman"] > r["other_heads_median"]),
    "04_lora": ("merged = unmerged; LoRA trains a fraction of the parameters",
                lambda r: r["merge_max_diff"] < 1e-4 and r["lora_share_cpu"] < 0.5 and r["lora_share_default"] < 0.2),
    "05_curriculum": ("each stage's loss falls; stage 1 gets the words right (<= 10 % WER from ~100 %); stage 2 "
                      "cuts the held-out loss at high mask ratios at least 4x, its WER within a few words of stage 1's",
                      lambda r: all(_falls(v) for v in r["loss_first_last"].values())
                      and r["test_wer_after_stage"]["0"] > 90 and r["test_wer_after_stage"]["1"] <= 10
                      # one word of the ~196 of `test` is 0.51 points; on the CPU task stage 2 moves the WER by a
                      # few words either way (piper's clips differ between corpus builds): at most 5 words worse
                      and r["test_wer_after_stage"]["2"] <= min(10, r["test_wer_after_stage"]["1"] + 2.6)
                      and r["high_t_loss"]["2"] < 0.25 * r["high_t_loss"]["1"]),
    # 06 watches PDD on held-out clips with white noise at 3 dB SNR, where the first step is often wrong. CPU
    # training is not bit-identical across machines; with K=15 six trainings gained 1.2-4.4 points from S=1 to
    # S=8 and 0.2-4.2 to S=4, while a single canvas at S=8 went from 6.5 points better to 1.3 worse. The text
    # claims K=15's gain at S=8 (checked: below S=1) and gives S=4's as a range (checked: at most a point above
    # S=1), and says the single canvas varies. On clean clips a single canvas moved
    # by up to four words (1.0 point) from S=1: "a few words" is checked as at most eight. The stage-1 model's
    # single canvas "mostly writes the same number again": at most five words (1.3 points) better at S=8 than at
    # S=1 (a training of 2026-12-06 gained four words, 3.32 -> 2.30 %). The two selection rules on the noisy clips:
    # from confidence 4.0 points ahead (a fresh training on CI, 2026-12-06) to MBR 0.5 ahead; "within a few points"
    # is checked as at most five
    "06_pdd": ("on noisy held-out clips the first step gets a quarter to a third of the words wrong, a later PDD step "
               "fixes what the first got wrong, S=8 ends below S=1 with K=15; on clean "
               "clips more steps change little; the candidates part ways after the first partial re-mask; MBR and "
               "confidence mostly agree and end within a few points; clean test WER <= 10 %",
               lambda r: r["test_wer"] <= 10
               and r["fixed_by_later_step"] is True and r["example_wer_step0"] > 0 and r["example_wer_final"] == 0
               and 20 <= r["wer_by_steps"]["1"] <= 40
               and r["wer_by_steps"]["8"] < r["wer_by_steps"]["1"]
               and r["wer_by_steps"]["4"] <= r["wer_by_steps"]["1"] + 1
               and max(abs(w - r["wer_by_steps_clean_k1"]["1"]) for w in r["wer_by_steps_clean_k1"].values()) <= 2.0
               and r["wer_by_steps_stage1_clean_k1"]["8"] > r["wer_by_steps_stage1_clean_k1"]["1"] - 1.3
               and r["distinct_after_step"][0] == 1 and max(r["distinct_after_step"]) > 1
               and r["same_choice"] >= 0.5 and abs(r["wer_noisy_mbr"] - r["wer_noisy_confidence"]) <= 5),
}


def result_of(nb) -> dict:
    lines = [line for c in nb.cells if c.cell_type == "code" for o in c.outputs
             for line in o.get("text", "").splitlines() if line.startswith("RESULT ")]
    assert lines, "the notebook printed no RESULT line"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def cpu_checkpoints():
    if not all((CKPT_DIR / f"stage{s}.pt").is_file() for s in (0, 1, 2)):
        subprocess.run(["make", "-C", str(ROOT), "cpu-model"], check=True)
    return CKPT_DIR


def test_there_are_six_notebooks():
    assert len(NOTEBOOKS) == 6 and set(CHECKS) == {p.stem for p in NOTEBOOKS}


def test_committed_outputs_satisfy_the_checks():
    """The committed copies carry the outputs of a CPU run, and those outputs say what the text says."""
    for path in NOTEBOOKS:
        what, ok = CHECKS[path.stem]
        assert ok(result_of(nbformat.read(path, as_version=4))), f"{path.name}: committed output fails: {what}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, cpu_checkpoints):
    nb = nbformat.read(path, as_version=4)
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 4
    assert "from _setup import *" in nb.cells[1].source  # one shared set-up, not a copy per notebook
    t0 = time.time()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    assert time.time() - t0 < 240  # the budget is 3 minutes on CPU; some slack for a loaded CI machine
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot"
    what, ok = CHECKS[path.stem]
    assert ok(result_of(nb)), f"{path.name}: {what}: {result_of(nb)}"


def test_readme_picture_is_the_saved_notebook_run():
    """The README's PDD picture is the one that the committed copy of notebook 06 printed."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## PDD in one picture"):]
    picture = section.split("```\n")[1].rstrip("\n")
    nb = nbformat.read(ROOT / "notebooks" / "06_pdd.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert picture.startswith("PDD, K = ") and picture in printed
