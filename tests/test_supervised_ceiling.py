"""scripts/supervised_ceiling.py: the labelled yardstick trains the encoder and exports it as a plain encoder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from bestrq2.config import get_preset
from bestrq2.evaluation.baselines import random_encoder
from bestrq2.export import load_encoder
from tests.test_evaluation import write_suite

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "supervised_ceiling.py"
spec = importlib.util.spec_from_file_location("supervised_ceiling", SCRIPT)
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)


def test_trains_the_encoder_on_clip_tasks_and_exports_the_best_epoch(tmp_path, monkeypatch):
    suite = write_suite(tmp_path / "suite")  # a clip task (low vs high tone) and a frame task, which is left out
    out = tmp_path / "ceiling"
    real, seen = sc.valid_accuracy, []

    def falling(enc, heads, data, crop, batch_size):  # the real scores, but epoch 2 made the best
        scores = real(enc, heads, data, crop, batch_size)
        seen.append({k: v.detach().clone() for k, v in enc.state_dict().items()})
        return {k: v + (1.0 if len(seen) == 2 else 0.0) for k, v in scores.items()}

    monkeypatch.setattr(sc, "valid_accuracy", falling)
    best = sc.main(["--suite", str(suite), "--seed", "3", "--epochs", "3", "--batch-size", "16", "--out", str(out)])
    assert best >= 1.9  # tones an octave and more apart: the real accuracy is at least 0.9
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3] and history["best_epoch"] == 2
    assert all(set(e["valid"]) == {"pitch"} for e in history["epochs"])

    enc = load_encoder(out)
    assert enc.export_meta["method"] == "supervised-ceiling" and enc.export_meta["seed"] == 3
    cfg = get_preset("tiny")
    init = random_encoder(cfg.frontend, cfg.encoder, 3)  # the init the script starts from
    trained, start = enc.state_dict(), init.state_dict()
    assert trained.keys() == start.keys()  # heads are not exported
    assert any(not torch.equal(trained[k], start[k]) for k in start if k.startswith("encoder."))
    assert all(torch.equal(trained[k], seen[1][k]) for k in trained)  # epoch 2's weights, not the last epoch's
    assert not all(torch.equal(trained[k], seen[2][k]) for k in trained)
    assert enc.export_meta["best_epoch"] == 2


def test_a_suite_without_clip_tasks_is_a_clear_error(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "manifest.jsonl").write_text("")
    with pytest.raises(SystemExit, match="no clip task"):
        sc.main(["--suite", str(suite), "--epochs", "1", "--out", str(tmp_path / "out")])
