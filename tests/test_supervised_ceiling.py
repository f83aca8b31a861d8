"""scripts/supervised_ceiling.py: the labelled yardstick trains the encoder and exports it as a plain encoder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from bestrq2.config import get_preset
from bestrq2.evaluation.baselines import random_encoder
from bestrq2.export import load_encoder
from tests.test_evaluation import write_suite

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "supervised_ceiling.py"
spec = importlib.util.spec_from_file_location("supervised_ceiling", SCRIPT)
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)


def test_trains_the_encoder_on_clip_tasks_and_exports_the_best_epoch(tmp_path):
    suite = write_suite(tmp_path / "suite")  # a clip task (low vs high tone) and a frame task, which is left out
    out = tmp_path / "ceiling"
    best = sc.main(["--suite", str(suite), "--seed", "3", "--epochs", "3", "--batch-size", "16", "--out", str(out)])
    assert best >= 0.9  # tones an octave and more apart
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert all(set(e["valid"]) == {"pitch"} for e in history["epochs"])
    assert max(e["valid_mean"] for e in history["epochs"]) == best

    enc = load_encoder(out)
    assert enc.export_meta["method"] == "supervised-ceiling" and enc.export_meta["seed"] == 3
    cfg = get_preset("tiny")
    init = random_encoder(cfg.frontend, cfg.encoder, 3)  # the init the script starts from
    trained, start = enc.state_dict(), init.state_dict()
    assert trained.keys() == start.keys()  # heads are not exported
    assert any(not torch.equal(trained[k], start[k]) for k in start if k.startswith("encoder."))
