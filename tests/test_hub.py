"""Hugging Face layout: model card, save_pretrained / from_pretrained, hub ids through the HF cache
(offline), push_to_hub's upload (with a stand-in for the network)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import bestrq2
from bestrq2 import hub
from bestrq2.evaluation.report import load_results
from bestrq2.inference import BestRQ2Encoder

pytest.importorskip("huggingface_hub")


def _fake_results(meta: dict) -> dict:
    return {
        "model": {"name": "micro", "output_dim": meta["output_dim"], "hop_size_in_ms": meta["hop_size_in_ms"]},
        "suite": {"name": "demo"},
        "tasks": {"keywords": {"domain": "speech", "kind": "clip", "classes": 20, "train": 10, "valid": 5,
                               "test": 7, "mlp": 0.25, "knn": 0.5}},  # fmt: skip
        "domains": {"speech": {"test": 7, "mlp": 0.25, "knn": 0.5}},
        "overall": {"test": 7, "mlp": 0.25, "knn": 0.5},
    }


def test_export_writes_a_model_card(micro_export, tmp_path):
    card = (micro_export / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: bestrq2\n") and "pipeline_tag: feature-extraction" in card
    meta = json.loads((micro_export / "config.json").read_text())
    assert f"one {meta['output_dim']}-d frame every {meta['hop_size_in_ms']:g} ms" in card
    assert "## Evaluation" not in card  # no results given: no table
    out = shutil.copytree(micro_export, tmp_path / "export")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "results.json").write_text(json.dumps(_fake_results(meta)))
    hub.write_card(out, tmp_path / "res", name="org/micro")
    card = (out / "README.md").read_text()
    assert "# org/micro" in card and 'load_encoder("org/micro")' in card
    assert "| **overall** | | | | 7 | **0.250** | **0.500** |" in card
    assert load_results(tmp_path / "res")["overall"]["knn"] == 0.5


def test_save_pretrained_round_trip_keeps_frames_and_provenance(micro_export, tmp_path):
    enc = bestrq2.load_encoder(micro_export)
    out = enc.save_pretrained(tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    before, after = json.loads((micro_export / "config.json").read_text()), json.loads((out / "config.json").read_text())
    assert after == before  # method, preset, step and the whole config survive a round trip
    again = BestRQ2Encoder.from_pretrained(out)
    wav = torch.randn(2, 20000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(again(wav), enc(wav))
    concat = bestrq2.load_encoder(micro_export, pooling="concat")
    assert json.loads((concat.save_pretrained(tmp_path / "hf2") / "config.json").read_text())["pooling"] == "concat"


def _hf_cache(root, repo_id: str, export) -> str:
    """A Hugging Face cache holding ``export`` as the main revision of ``repo_id`` (the layout
    huggingface_hub writes: refs/main -> snapshots/<commit>/files)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(export, repo / "snapshots" / commit)
    return commit


def test_hub_id_resolves_through_the_cache_offline(micro_export, tmp_path):
    cache = tmp_path / "hf-cache"
    _hf_cache(cache, "someorg/micro-encoder", micro_export)
    script = textwrap.dedent(f"""
        import json, torch, bestrq2
        from bestrq2.inference import BestRQ2Encoder
        enc = bestrq2.load_encoder("someorg/micro-encoder")
        local = bestrq2.load_encoder({str(micro_export)!r})
        wav = torch.randn(1, 16000) * 0.1
        with torch.no_grad():
            same = torch.equal(enc(wav), local(wav))
        also = BestRQ2Encoder.from_pretrained("someorg/micro-encoder")
        try:
            bestrq2.load_encoder("someorg/not-cached")
            missing = "loaded"
        except FileNotFoundError as e:
            missing = str(e)
        print(json.dumps({{"same": same, "dim": also.output_dim, "missing": missing}}))
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf-home"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["same"] is True
    assert got["dim"] == json.loads((micro_export / "config.json").read_text())["output_dim"]
    assert "someorg/not-cached" in got["missing"] and "cache" in got["missing"]


def test_local_paths_are_never_taken_for_hub_ids(micro_export, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    shutil.copytree(micro_export, tmp_path / "org" / "name")
    assert not hub.is_hub_id("org/name")  # exists here: a folder
    assert hub.is_hub_id("org/other") and not hub.is_hub_id("./org/other") and not hub.is_hub_id("a/b/c")
    assert bestrq2.load_encoder("org/name").output_dim > 0


def test_push_to_hub_uploads_the_export_files(micro_export, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:  # stands in for the network: records what would be sent
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create", repo_id, private, exist_ok))
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message):
            files = sorted(p for p in os.listdir(folder_path))
            calls.append(("upload", repo_id, files, sorted(allow_patterns)))
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = shutil.copytree(micro_export, tmp_path / "export")
    (out / "README.md").unlink()
    url = hub.push_to_hub(out, "org/micro", private=True)
    assert url == "https://hub/org/micro/commit/1"
    assert ("create", "org/micro", True, True) in calls
    upload = next(c for c in calls if c[0] == "upload")
    assert upload[2] == ["README.md", "config.json", "model.safetensors"]  # the card was written first
    assert set(upload[3]) == set(hub.HUB_FILES)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (out / "model.safetensors").unlink()
        hub.push_to_hub(out, "org/micro")


def test_hub_ids_without_huggingface_hub_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(RuntimeError, match=r"pip install 'bestrq2\[hub\]'"):
        bestrq2.load_encoder("org/some-model")
