"""Recipe ablation at demo scale: each variant pretrained with 2 seeds on the same budget (CPU time or steps),
exported with the default settings and evaluated (X-ARES protocol on the demo suite) beside random-init
encoders of the same architecture (the same 2 seeds) and log-mel statistics.

    python scripts/recipe_ablation.py --minutes 4 --out results/recipe --runs runs/recipe
    python scripts/recipe_ablation.py --variants ref,fullband --seeds 0 --minutes 1   (a quick look)

Equal CPU time: before a variant's runs, 30 timed steps measure its speed, and max_steps is set so
that pretraining takes about ``--minutes`` (the schedule, warm-up included, follows max_steps).
Runs that finished are reused; ``results.json`` and ``table.md`` are rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import time
from pathlib import Path

import torch

from bestrq2.config import apply_override, get_preset
from bestrq2.evaluation import evaluate
from bestrq2.export import export
from bestrq2.training.logs import read_log
from bestrq2.training.loop import pretrain

FULL_BAND = ["frontend.patch_freq=128", "frontend.patch_time=4"]
M80 = FULL_BAND + ["encoder.layer_scale=0.1", "mask.ratio_min=0.75", "mask.ratio_max=0.85"]
# each on top of tiny-ref; the first four are cumulative, the rest vary +mask80 by one option
VARIANTS: dict[str, list[str]] = {
    "ref": [],  # the tiny reference recipe: 16x16 patches, 2-D sin-cos, LayerNorm/GELU, mask 0.4-0.6
    "fullband": FULL_BAND,  # 128x4 patches, 1-D positions over time
    "+layerscale": FULL_BAND + ["encoder.layer_scale=0.1"],
    "+mask80": M80,
    "m80rope": M80 + ["encoder.positions=rope"],  # the recipe before block2x
    "m80lr2e4": M80 + ["optim.lr=2e-4"],
    "m80lr1e3": M80 + ["optim.lr=1e-3"],
    "m80pred4": M80 + ["predictor.depth=4", "predictor.width=192", "predictor.heads=3"],
    "m80freeze": M80 + ["optim.encoder_freeze_fraction=0.1"],
    "cb4": M80 + ["quantizer.num_codebooks=4"],
    "cb4mix": M80 + ["quantizer.num_codebooks=4", "quantizer.codebook_norms=patch,patch,global,global"],
    "cb4ema": M80 + ["quantizer.num_codebooks=4", "optim.ema_decay=0.999"],
}
RECIPE = M80 + ["encoder.positions=rope"]  # m80rope; the tiny preset is RECIPE + block2x (r+block2x)
# one option at a time on top of the recipe
VARIANTS |= {
    "r+block2x": RECIPE + ["encoder.norm=rmsnorm", "encoder.mlp=swiglu", "encoder.qk_norm=true"],
    # block2x taken apart: which of its three changes carries its gain
    "r+rmsnorm": RECIPE + ["encoder.norm=rmsnorm"],
    "r+swiglu": RECIPE + ["encoder.mlp=swiglu"],
    "r+qknorm": RECIPE + ["encoder.qk_norm=true"],
    "r+timespan2": RECIPE + ["mask.kind=time", "mask.span=2"],
    "r+energycrop": RECIPE + ["data.crop_attempts=4"],
    "r+globaltargets": RECIPE + ["quantizer.norm=global"],
    "r+ema": RECIPE + ["optim.ema_decay=0.995"],  # time constant 200 steps: a fifth of the run
}
TINY = VARIANTS["r+block2x"]  # the tiny preset until sub-band targets (t+bands8) joined it
# on top of tiny: QK-norm and RMSNorm are meant to allow higher learning rates than the LayerNorm
# blocks that lr 1e-3 hurt (m80lr1e3)
VARIANTS["t+lr1e3"] = TINY + ["optim.lr=1e-3"]
VARIANTS["t+lr2.5e4"] = TINY + ["optim.lr=2.5e-4"]  # less drift from the random projection (weight_drift.py)
# multi-mask training: each clip read once and seen under several masks (more targets per step, same loader work)
VARIANTS["t+rep2"] = TINY + ["mask.repeats=2"]
VARIANTS["t+rep4"] = TINY + ["mask.repeats=4"]
# sub-band targets: each mel band of the full-band patch quantised on its own (quantizer.bands); the
# bag-of-codes probe of these targets (scripts/target_information.py) is 0.45-0.48 against 0.33
VARIANTS["t+bands4"] = TINY + ["quantizer.bands=4"]
VARIANTS["t+bands8"] = TINY + ["quantizer.bands=8", "quantizer.codebook_size=256"]  # the tiny preset since stop 20
VARIANTS["t+bands16"] = TINY + ["quantizer.bands=16", "quantizer.codebook_size=256"]

# on top of the tiny preset (t+bands8): how long a crop, how many masked, what the targets keep
TINY8 = VARIANTS["t+bands8"]
VARIANTS["t8+crop2.5"] = TINY8 + ["data.crop_seconds=2.5", "train.batch_size=32"]  # same tokens per step
VARIANTS["t8+mask60"] = TINY8 + ["mask.ratio_min=0.5", "mask.ratio_max=0.7"]
VARIANTS["t8+pglobal"] = TINY8 + ["quantizer.num_codebooks=2", "quantizer.codebook_norms=patch,global"]
VARIANTS["t8+ppatch"] = TINY8 + ["quantizer.num_codebooks=2"]  # pglobal's control: twice the targets, no level
VARIANTS["t8+w384"] = TINY8 + ["encoder.width=384", "encoder.heads=6"]  # does the gain grow with width?
VARIANTS["t8+d8"] = TINY8 + ["encoder.depth=8"]  # the encoder reads a fifth of the tokens: depth is cheap
# block 2 of the 4-block encoder is its best layer, the last two serve the predictor (stop 23): a 2-block
# encoder, alone or with the predictor taking over the two blocks it lost
VARIANTS["t8+d2"] = TINY8 + ["encoder.depth=2"]
VARIANTS["t8+d2p4"] = TINY8 + ["encoder.depth=2", "predictor.depth=4"]
# the small-2x preset's encoder and predictor (21.5 M encoder parameters, 12 blocks of width 384) trained as
# tiny is (16 x 5 s clips a step), lr halved for the depth: does a larger encoder learn context on a CPU budget?
VARIANTS["t8+s2x"] = TINY8 + [
    "encoder.width=384", "encoder.heads=6", "encoder.depth=12", "encoder.drop_path=0.1",
    "predictor.width=384", "predictor.heads=6", "predictor.depth=4", "optim.lr=2.5e-4",
]  # fmt: skip
# 4x the clips per step (GPU presets train at batch 256): at 1000 steps, the clips of 4000 steps of tiny
VARIANTS["t8+b64"] = TINY8 + ["train.batch_size=64"]
# stop 23: masked spans long enough that a neighbour cannot be copied (625 ms, 1.25 s): does predicting far
# from any visible token push clip-level properties into the encoder?
VARIANTS["t8+span4"] = TINY8 + ["mask.kind=time", "mask.span=4"]
VARIANTS["t8+span8"] = TINY8 + ["mask.kind=time", "mask.span=8"]
VARIANTS["t8+pred1"] = TINY8 + ["predictor.depth=1"]  # a weaker predictor leaves more of the work to the encoder
# a local predictor: each masked slot sees only the nearest visible token(s) on either side, so whatever it
# needs from farther away must come through the encoder (`bestrq2 diagnose`: tiny's encoder uses no context)
VARIANTS["t8+local1"] = TINY8 + ["predictor.neighbours=1"]
VARIANTS["t8+local2"] = TINY8 + ["predictor.neighbours=2"]
# long masked spans with a local predictor: a masked step up to seconds away from the visible chunk sees only
# the chunk's edge token, which must then carry what the chunk says about the clip
VARIANTS["t8+span4local1"] = VARIANTS["t8+span4"] + ["predictor.neighbours=1"]
VARIANTS["t8+span8local1"] = VARIANTS["t8+span8"] + ["predictor.neighbours=1"]
# the last encoder blocks serve the predictor (block 2 beats the final layer): does a predictor with room for
# that work (4 blocks, as wide as the encoder) leave the encoder's top as good as its middle?
VARIANTS["t8+pred4"] = TINY8 + ["predictor.depth=4", "predictor.width=192", "predictor.heads=3"]
# 312 ms tokens: the bracketing visible patches lie twice as far (in time) from a masked one
VARIANTS["t8+pt8"] = TINY8 + ["frontend.patch_time=8"]
# stop 24: utterance mixing (WavLM's denoising pretext): the encoder reads the clip with a segment of another
# clip added, the targets stay the clean codes, so the bracketing patches no longer give them away and which
# source to follow has to come from the rest of the clip
VARIANTS["t8+mix20"] = TINY8 + ["mix.prob=0.2"]
VARIANTS["t8+mix50"] = TINY8 + ["mix.prob=0.5"]
# with a local predictor, the predictor cannot work out which source to follow from the whole clip itself: that
# has to reach the bracketing tokens through the encoder
VARIANTS["t8+mix50local1"] = VARIANTS["t8+mix50"] + ["predictor.neighbours=1"]
# stop 26: a one-sided local predictor. A masked slot reads the nearest visible step on its left only, so its
# right bracketing patch reaches the prediction only through the encoder's output at the left one: the encoder
# has to carry its neighbours' content (with spans of 4, a neighbour at least 625 ms away)
VARIANTS["t8+left1"] = VARIANTS["t8+local1"] + ["predictor.sides=left"]
VARIANTS["t8+span4left1"] = VARIANTS["t8+span4local1"] + ["predictor.sides=left"]
# an attention-only predictor: a masked slot's state is its query plus an attention-weighted sum of per-token
# projections of the encoder's outputs, so a prediction that needs a *conjunction* of the bracketing patches
# (mean pooling rewards nonlinear features of several patches, not their sum) has to be computed by the encoder
VARIANTS["t8+attn1"] = TINY8 + ["predictor.depth=1", "predictor.mlp_ratio=0"]
VARIANTS["t8+attn2"] = TINY8 + ["predictor.mlp_ratio=0"]
# stop 28: a clip-level prediction from the mean of the visible outputs, the mean a probe reads
VARIANTS["t8+clip1"] = TINY8 + ["predictor.clip_weight=1"]
# targets of how a patch departs from its clip's mean patch (cepstral mean normalisation of the targets)
VARIANTS["t8+cmn"] = TINY8 + ["quantizer.norm=clip"]
# both: one codebook codes the patch (what the clip sounds like), the other its departure from the clip's mean
VARIANTS["t8+pclip"] = TINY8 + ["quantizer.num_codebooks=2", "quantizer.codebook_norms=patch,clip"]
# stop 29: a clip-level contrastive term across two masks of each clip (predictor.contrast_weight). The codes ask
# the encoder for a per-patch map only; this asks the pooled features, the ones a probe reads, to tell the
# batch's clips apart and to agree across two views (independent masks) of one clip. t8+rep2 is its control: the same two
# masks per clip, no contrastive term
VARIANTS["t8+rep2"] = TINY8 + ["mask.repeats=2"]
VARIANTS["t8+con1"] = VARIANTS["t8+rep2"] + ["predictor.contrast_weight=1"]
# targets from a frozen teacher (quantizer.teacher), HuBERT's second iteration inside BEST-RQ-2: the random
# projection quantises the features of the same seed's 1000-step tiny (its final output, or block 2 of 4, the
# middle layer HuBERT's convention would take) instead of the log-mel patch. Pretraining holds nonlinear
# information no linear map of the patch has (stop 29, pca:DIM:DATA); targets made of it ask for more of it
TEACHER = "quantizer.teacher={runs}/tpbands8/seed{seed}/export"  # t+bands8 in the same --runs, run first
VARIANTS["t8+teach"] = TINY8 + [TEACHER]
VARIANTS["t8+teach1"] = TINY8 + [TEACHER, "quantizer.teacher_layer=1"]
# codes of a window of patches (quantizer.window): each token's target is its patch with its time neighbours,
# 470 ms (3) or 780 ms (5). The bag-of-codes probe of these targets rises from 0.458 to 0.485 and 0.506
# (scripts/target_information.py, results/recipe/targets-window), as random features of windows did (stop 25)
VARIANTS["t8+win3"] = TINY8 + ["quantizer.window=3"]
VARIANTS["t8+win5"] = TINY8 + ["quantizer.window=5"]
# stop 30: targets of the spectral envelope (quantizer.lifter: each frame's mel spectrum rebuilt from its first
# 12 cepstral coefficients). The codes of raw 16-mel bands are pitch detectors (bag-of-codes probe: pitch class
# 0.90, keywords 0.15); envelope codes carry keywords 0.32 and instrument family 0.43 and lose pitch (0.21);
# both codebooks together score 0.530, the most of any design (results/recipe/targets-lifter). t8+ppatch
# (two raw codebooks) is the control with as many targets
VARIANTS["t8+lift12"] = TINY8 + ["quantizer.lifter=12"]
VARIANTS["t8+rawlift12"] = TINY8 + ["quantizer.num_codebooks=2", "quantizer.codebook_lifters=0,12"]
# the envelope codes do not reach the features (t8+lift12). If that is because the predictor decodes the codes from
# whatever the encoder passes on, an attention-only one-block predictor (t8+attn1: tokens interact only through
# attention weights, each masked slot a weighted sum of linear maps of the encoder's outputs) should let them through
VARIANTS["t8+rawlift12attn1"] = VARIANTS["t8+rawlift12"] + ["predictor.depth=1", "predictor.mlp_ratio=0"]
# stop 31: a cepstral pyramid, the patch at four spectral resolutions (all its mels, then the envelope of 24, 12
# and 4 cepstral coefficients), one codebook each per band. Bag-of-codes probe 0.597 against 0.530 for raw +
# lift12 (results/recipe/targets-pyramid); t8+raw2lift12x2 is the control with as many codebooks (0.580)
VARIANTS["t8+cep4"] = TINY8 + ["quantizer.num_codebooks=4", "quantizer.codebook_lifters=0,24,12,4"]
VARIANTS["t8+raw2lift12x2"] = TINY8 + ["quantizer.num_codebooks=4", "quantizer.codebook_lifters=0,0,12,12"]
# stop 31: the second iteration again, at the preset's 4000 steps (stop 29's ran 1000, and gains from richer targets
# came late), on block 2 of 4 (HuBERT's middle layer) of the current tiny (t8+rawlift12, in the same --runs, run first)
VARIANTS["t8+teachlift1"] = TINY8 + ["quantizer.teacher={runs}/t8prawlift12/seed{seed}/export", "quantizer.teacher_layer=1"]
# stop 31: coarser codes of the preset's two kinds (64 per codebook instead of 256): if what helps a target is that it
# groups patches into broad classes rather than that it carries detail, fewer codes should not hurt
VARIANTS["t8+rawlift12c64"] = VARIANTS["t8+rawlift12"] + ["quantizer.codebook_size=64"]
# stop 32: the preset's codes from k-means centroids of its own prepared inputs (HuBERT's first-iteration targets)
# instead of random codes; fit them first: bestrq2 codebooks --out runs/codes/tiny-s0.safetensors --crops 2048
VARIANTS["t8+rawlift12km"] = VARIANTS["t8+rawlift12"] + ["quantizer.centroids=runs/codes/tiny-s0.safetensors"]
# stop 32: HuBERT's second iteration proper: k-means centroids (not random codes) of the first iteration's block-2
# features, per band as in t8+teachlift1; fit them per seed first (docs: results/recipe/README.md, stop 32)
VARIANTS["t8+teachkm1"] = VARIANTS["t8+teachlift1"] + ["quantizer.centroids=runs/codes/teach1-b8-k256-s{seed}.safetensors"]
# stop 32: tokens of 2 frames (78 ms) instead of 4: 312 ms tokens (t8+pt8) lost the gain; do finer ones gain?
VARIANTS["t8+rawlift12pt2"] = VARIANTS["t8+rawlift12"] + ["frontend.patch_time=2"]
# stop 32: an EMA of the weights (the BEST-RQ-2.x model cards'), exported; stop 20 tried it at 1000 steps on an
# older recipe only. Time constant 1000 steps, a quarter of the run; batch 16 makes the weights noisy
VARIANTS["t8+rawlift12ema"] = VARIANTS["t8+rawlift12"] + ["optim.ema_decay=0.999"]
# stop 32: k-means of the whole 128-mel token, raw and envelope (HuBERT's MFCC clusters: a joint configuration of
# formants, which per-band codes cannot name); fit first: bestrq2 codebooks --out runs/codes/fb-rawlift12-k256.safetensors
# --set quantizer.bands=1 --crops 2048
VARIANTS["t+fbkm"] = VARIANTS["t8+rawlift12"] + ["quantizer.bands=1", "quantizer.centroids=runs/codes/fb-rawlift12-k256.safetensors"]
# stop 32: HuBERT's second iteration from the whole-token k-means run (t+fbkm, in the same --runs, run first): k-means
# of its block-2 features per 24-dim group, fitted per seed (results/recipe/README.md, stop 32)
VARIANTS["t8+fbteachkm1"] = TINY8 + [
    "quantizer.teacher={runs}/tpfbkm/seed{seed}/export", "quantizer.teacher_layer=1",
    "quantizer.centroids=runs/codes/fbteach1-b8-k256-s{seed}.safetensors",
]  # fmt: skip
# stop 33: the STFT window, the reference's 2048 samples (128 ms at the 39 ms hop) against 64 ms and 256 ms
VARIANTS["t8+rawlift12nfft1024"] = VARIANTS["t8+rawlift12"] + ["frontend.n_fft=1024"]
VARIANTS["t8+rawlift12nfft4096"] = VARIANTS["t8+rawlift12"] + ["frontend.n_fft=4096"]
# stop 33: does a wider encoder hold richer targets? Four codebooks per band lost 0.01-0.02 at width 192 (stop 31)
VARIANTS["t8+rawlift12w384"] = VARIANTS["t8+rawlift12"] + ["encoder.width=384", "encoder.heads=6"]
VARIANTS["t8+cep4w384"] = VARIANTS["t8+cep4"] + ["encoder.width=384", "encoder.heads=6"]
# stop 34: 3 of 32 tokens visible per 5 s crop instead of 5-8: each visible token has to carry more of what the
# clip sounds like for the predictor to fill the rest (a pressure towards clip-level content in every token)
VARIANTS["t8+rawlift12mask90"] = VARIANTS["t8+rawlift12"] + ["mask.ratio_min=0.88", "mask.ratio_max=0.92"]
# stop 34: how close to the identity the blocks start (LayerScale's initial value; the preset's 0.1 was only ever
# compared with none). Smaller keeps the random projection longer, larger lets the blocks transform the patch sooner
VARIANTS["t8+rawlift12ls001"] = VARIANTS["t8+rawlift12"] + ["encoder.layer_scale=0.01"]
VARIANTS["t8+rawlift12ls03"] = VARIANTS["t8+rawlift12"] + ["encoder.layer_scale=0.3"]
# stop 35: is it the codes or masked prediction itself? MAE's target (each masked patch, normalised over its own
# values, regressed by a linear head on the predictor) instead of the codes, and beside them
VARIANTS["t8+mae"] = VARIANTS["t8+rawlift12"] + ["predictor.code_weight=0", "predictor.regress_weight=1"]
VARIANTS["t8+rawlift12mae"] = VARIANTS["t8+rawlift12"] + ["predictor.regress_weight=1"]
# stop 35: the whole gain is in the learned linear patch embedding; frozen at its random init, can the blocks learn it?
VARIANTS["t8+frozenembed"] = VARIANTS["t8+rawlift12"] + ["encoder.freeze_patch_embed=true"]
# a diagnosis, not a recipe: targets from the supervised ceiling (scripts/supervised_ceiling.py, trained with the
# suite's labels; run it first). Do BEST-RQ-2's features follow targets whose codes carry the tasks' categories?
VARIANTS["t8+oracle"] = TINY8 + ["quantizer.teacher=runs/ceiling/tiny-seed{seed}"]
TWO_SEED = "ref,fullband,+layerscale,+mask80,m80rope,m80rope@crop,r+block2x,r+timespan2,r+energycrop,r+globaltargets,r+ema,t+lr1e3,t+lr2.5e4,t+rep4"


EXPORTS = {"crop": {"chunk_seconds": "crop"}}
"""``VARIANT@EXPORT``: VARIANT's runs exported with other settings (``@crop``: inference chunks = training crop)."""


def overrides_for(name: str, extra: dict[str, list[str]]) -> list[str]:
    return (VARIANTS | extra)[name.partition("@")[0]]


def config(name: str, seed: int, extra: dict[str, list[str]], steps: int, runs: str = "runs/recipe"):
    cfg = get_preset("tiny-ref")
    for o in overrides_for(name, extra):
        apply_override(cfg, o.replace("{seed}", str(seed)).replace("{runs}", runs))  # e.g. each seed's own teacher
    cfg.train.seed = seed
    cfg.train.max_steps = steps
    cfg.train.ckpt_every = max(steps, 1)
    cfg.train.log_every = 25
    cfg.data.num_workers = 1  # one loader process per run: two runs side by side fill a 2-core machine
    return cfg.validate()


def calibrate(name: str, extra: dict[str, list[str]], data: Path, runs: Path, minutes: float) -> int:
    """Steps that fill ``minutes`` of pretraining: 30 steps timed after 10 warm-up steps."""
    probe = runs / f"_calibrate-{name.partition('@')[0]}"
    if (probe / "steps.json").exists():
        return json.loads((probe / "steps.json").read_text())["steps"]
    cfg = config(name, 0, extra, 40, str(runs))
    cfg.train.log_every = 10
    pretrain(cfg, data, probe, progress=False, tensorboard=False)
    rows = read_log(probe)
    t = {int(r["step"]): float(r["elapsed_s"]) for r in rows}
    per_step = (t[40] - t[10]) / 30
    steps = int(minutes * 60 / per_step)
    (probe / "steps.json").write_text(json.dumps({"steps": steps, "s_per_step": per_step}))
    return steps


def scores(result: dict) -> dict:
    return {"mlp": result["overall"]["mlp"], "knn": result["overall"]["knn"],
            "tasks": {k: {"mlp": v["mlp"], "knn": v["knn"]} for k, v in result["tasks"].items()}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=TWO_SEED)
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=OVERRIDE;OVERRIDE...",
                    help="define another variant from scratch, e.g. 'fb+ema=frontend.patch_freq=128;...'")  # fmt: skip
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--minutes", type=float, default=4.0, help="pretraining CPU time per run")
    ap.add_argument("--steps", type=int, help="fixed optimiser steps instead of the calibrated ones")
    ap.add_argument("--data", default="data/corpus/manifest.jsonl")
    ap.add_argument("--data-fraction", type=float, default=1.0,
                    help="pretrain on a seeded random subset of this share of the manifest's files (a data-scale curve)")
    ap.add_argument("--suite", default="data/suite")
    ap.add_argument("--runs", default="runs/recipe")
    ap.add_argument("--out", default="results/recipe")
    args = ap.parse_args()
    extra = {}
    for e in args.extra:
        name, _, body = e.partition("=")
        extra[name] = [o for o in body.split(";") if o]
    runs, out = Path(args.runs), Path(args.out)
    data = subset_manifest(Path(args.data), args.data_fraction, runs) if args.data_fraction < 1 else Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results.setdefault("logmel", scores(evaluate("logmel", args.suite, progress=False)))
    info = {
        "command": "python scripts/recipe_ablation.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    }  # fmt: skip
    for name in args.variants.split(","):
        steps = args.steps or calibrate(name, extra, data, runs, args.minutes)
        minutes = None if args.steps else args.minutes
        for seed in [int(s) for s in args.seeds.split(",")]:
            key = f"{name}/seed{seed}"
            if key in results and results[key].get("minutes") == minutes and results[key]["steps"] == steps:
                continue
            base, _, export_kind = name.partition("@")
            run = runs / base.replace("+", "p") / f"seed{seed}"
            cfg = config(name, seed, extra, steps, str(runs))
            t0 = time.time()
            if not (run / "summary.json").exists():
                pretrain(cfg, data, run, resume=(run / "checkpoints" / "last.pt").exists(), progress=False)
            train_s = json.loads((run / "summary.json").read_text())["elapsed_s"]
            exp = export(run, run / f"export{'-' + export_kind if export_kind else ''}", **EXPORTS.get(export_kind, {}))
            pre = scores(evaluate(str(exp), args.suite, progress=False))
            rnd = scores(evaluate(f"random:{exp}:{seed}", args.suite, progress=False))
            results[key] = {"variant": name, "seed": seed, "overrides": overrides_for(name, extra), "steps": steps,
                            "minutes": minutes, "train_s": train_s, "pretrained": pre, "random": rnd,
                            "wall_s": time.time() - t0}  # fmt: skip
            # re-read before writing: several processes may share one results file (e.g. one per seed)
            results = (json.loads(results_file.read_text()) if results_file.exists() else results) | {key: results[key]}
            results["_info"] = info
            results_file.write_text(json.dumps(results, indent=1))
            (out / "table.md").write_text(table(results))
            print(f"{key}: pretrained {pre['mlp']:.3f}/{pre['knn']:.3f} random {rnd['mlp']:.3f}/{rnd['knn']:.3f}", flush=True)
    print(table(results))


def subset_manifest(manifest: Path, fraction: float, runs: Path) -> Path:
    """A JSONL manifest of ``fraction`` of ``manifest``'s rows (shuffled with seed 0, so every run of a
    fraction gets the same files; a smaller fraction's files are a subset of a larger one's), paths made absolute."""
    if not 0 < fraction <= 1:
        raise SystemExit(f"--data-fraction must be in (0, 1], got {fraction}")
    if manifest.suffix != ".jsonl" or not manifest.is_file():
        raise SystemExit(f"--data-fraction needs a .jsonl manifest as --data, got {manifest}")
    lines = [line for line in manifest.read_text().splitlines() if line.strip()]
    random.Random(0).shuffle(lines)
    rows = [json.loads(line) for line in lines[: max(1, int(len(lines) * fraction))]]
    for row in rows:
        row["path"] = str((manifest.parent / row["path"]).resolve())
    path = runs / f"{manifest.stem}-fraction{fraction:g}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def table(results: dict) -> str:
    lm = results["logmel"]
    lines = [
        f"log-mel mean + std: linear probe {lm['mlp']:.3f}, kNN {lm['knn']:.3f}",
        "",
        "| variant | steps | train min | probe: pretrained (seeds) | probe: random | probe gain | kNN: pretrained (seeds) | kNN: random | kNN gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_variant: dict[str, list[dict]] = {}
    for k, v in results.items():
        if "/" in k:
            by_variant.setdefault(v["variant"], []).append(v)
    fmt = lambda xs: f"{statistics.mean(xs):.3f}" + (f" ({', '.join(f'{x:.3f}' for x in xs)})" if len(xs) > 1 else "")  # noqa: E731
    order = list(VARIANTS) + [f"{v}@{e}" for v in VARIANTS for e in EXPORTS]
    for name, rs in sorted(by_variant.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        rs = sorted(rs, key=lambda r: r["seed"])  # the figures in brackets are per seed, in seed order
        pm, rm = [r["pretrained"]["mlp"] for r in rs], [r["random"]["mlp"] for r in rs]
        pk, rk = [r["pretrained"]["knn"] for r in rs], [r["random"]["knn"] for r in rs]
        lines.append(
            f"| {name} | {rs[0]['steps']} | {statistics.mean(r['train_s'] for r in rs) / 60:.1f} | {fmt(pm)} | {fmt(rm)} "
            f"| {statistics.mean(pm) - statistics.mean(rm):+.3f} | {fmt(pk)} | {fmt(rk)} | {statistics.mean(pk) - statistics.mean(rk):+.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
