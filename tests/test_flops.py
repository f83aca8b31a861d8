"""Analytic FLOP counts (bestrq2.bench.flops) against torch's FlopCounterMode on real forward/backward passes.

FlopCounterMode counts matmuls and convolutions only, as the analytic count does; on the CPU it sees
attention only through the math backend of SDPA (its fused CPU kernel has no FLOP formula), hence
``sdpa_kernel(MATH)`` here.
"""

from __future__ import annotations

import pytest
import torch
from conftest import micro_config
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bestrq2.bench.devices import measure_matmul_tflops, peak_bf16_tflops, resolve_peak
from bestrq2.bench.flops import inference_flops, step_flops, vit_block
from bestrq2.bench.maxbatch import search_max_batch
from bestrq2.export import inference_encoder
from bestrq2.masking import mask_generator
from bestrq2.models.encoder import ViTEncoder
from bestrq2.models.layers import Block
from bestrq2.models.predictor import Predictor
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.training.distributed import DistInfo
from bestrq2.training.parallel import prepare_model

METHODS = ["bestrq2", "bestrq-vit", "bestrq-conformer", "audiojepa"]


def counted(fn) -> int:  # noqa: ANN001
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fcm:
        fn()
    return fcm.get_total_flops()


def test_block_forward_matches_counter():
    B, L, D = 3, 20, 48
    blk = Block(D, heads=4, mlp_ratio=4.0)
    x = torch.randn(B, L, D)
    assert counted(lambda: blk(x)) == vit_block(B, L, D, 4.0)


def test_encoder_and_predictor_forward_match_counter():
    cfg = micro_config()
    B, S = 2, int(cfg.data.crop_seconds * cfg.frontend.sample_rate)
    lengths = torch.full((B,), S)
    masks = sample_batch_masks(cfg, lengths, S, mask_generator(0, 0, 0))
    sf = step_flops(cfg, B, S, masks.ratio)
    grid = (cfg.frontend.freq_patches, cfg.frontend.time_patches(S))
    N = grid[0] * grid[1]
    assert (
        masks.ids_keep.shape[1] == sf.visible
        and masks.ids_mask.shape[1] == sf.masked
        and N == sf.tokens_per_clip
    )
    enc = ViTEncoder(cfg.encoder, cfg.frontend.patch_dim)
    pred = Predictor(cfg.predictor, cfg.encoder.width)
    patches = torch.randn(B, N, cfg.frontend.patch_dim)
    with torch.no_grad():
        context = enc(patches, grid, ids=masks.ids_keep)
        enc_flops = counted(lambda: enc(patches, grid, ids=masks.ids_keep))
        pred_flops = counted(lambda: pred(context, masks, grid))
    fwd = {t.name: t.forward for t in sf.terms}
    assert enc_flops == pytest.approx(sum(v for k, v in fwd.items() if k.startswith("encoder.")), rel=0.01)
    assert pred_flops == pytest.approx(sum(v for k, v in fwd.items() if k.startswith("predictor.")), rel=0.01)


def _step_count(cfg, activation_checkpointing: bool = False) -> tuple[int, object]:  # noqa: ANN001
    torch.manual_seed(0)
    core = build_objective(cfg).train()
    cfg.parallel.activation_checkpointing = activation_checkpointing
    model = prepare_model(core, cfg.parallel, DistInfo(0, 1, 0, torch.device("cpu")))
    B, S = 2, int(cfg.data.crop_seconds * cfg.frontend.sample_rate)
    lengths = torch.full((B,), S)
    masks = sample_batch_masks(cfg, lengths, S, mask_generator(0, 0, 3))
    wav = torch.randn(B, S) * 0.1
    n = counted(lambda: model(wav, lengths, masks)["loss"].backward())
    return n, step_flops(cfg, B, S, masks.ratio)


def _depthwise_overcount(cfg, sf) -> float:  # noqa: ANN001
    """FlopCounterMode ignores groups in the weight gradient of a convolution: it counts the Conformer's
    depthwise convolution's weight gradient width times over (torch 2.x)."""
    if cfg.method != "bestrq-conformer":
        return 0.0
    B, T, D, k = 2, sf.tokens_per_clip, cfg.encoder.width, cfg.conformer.conv_kernel
    return cfg.encoder.depth * (D - 1) * 2.0 * B * T * D * k


@pytest.mark.parametrize("method", METHODS)
def test_whole_step_matches_counter(method):
    cfg = micro_config()
    cfg.method = method
    cfg.validate()
    n, sf = _step_count(cfg)
    # matmuls only on both sides, so the counts agree exactly (up to the counter's known depthwise overcount)
    assert n == pytest.approx(sf.model + _depthwise_overcount(cfg, sf), rel=1e-6)
    assert sf.model == pytest.approx(sum(sf.by_part().values()))


@pytest.mark.parametrize(
    "method,overrides",
    [
        ("bestrq2", {"quantizer__num_codebooks": 2, "encoder__positions": "rope"}),
        ("bestrq2", {"encoder__mlp": "swiglu", "encoder__norm": "rmsnorm", "encoder__qk_norm": True,
                     "encoder__layer_scale": 0.1, "frontend__patch_freq": 128, "frontend__patch_time": 4}),  # fmt: skip
        ("bestrq-vit", {"onestep__fill": "token"}),  # the patch embedding's input then needs a gradient
        ("bestrq-conformer", {"onestep__fill": "token"}),
    ],
)
def test_step_variants_match_counter(method, overrides):
    cfg = micro_config(**overrides)
    cfg.method = method
    cfg.validate()
    n, sf = _step_count(cfg)
    assert n == pytest.approx(sf.model + _depthwise_overcount(cfg, sf), rel=1e-6)


@pytest.mark.parametrize("drop_path", [0.0, 0.3])  # depth 2 at 0.3: rates 0 and 0.3, one block of each kind
@pytest.mark.parametrize("method", METHODS)
def test_activation_checkpointing_recompute_is_hardware_flops(method, drop_path):
    cfg = micro_config(encoder__drop_path=drop_path)
    cfg.method = method
    cfg.validate()
    n, sf = _step_count(cfg, activation_checkpointing=True)
    assert sf.recompute > 0
    # the EMA target runs without grad: no recompute; ViT blocks are recomputed up to fc2 (early stop),
    # or whole when drop-path saves fc2's output
    assert n == pytest.approx(sf.hardware(True) + _depthwise_overcount(cfg, sf), rel=1e-6)


def test_token_counts_follow_the_objectives():
    cfg = micro_config()
    S = int(cfg.data.crop_seconds * cfg.frontend.sample_rate)
    sf = step_flops(cfg, 4, S, 0.5)
    assert sf.tokens_per_clip == 8 * 4 and sf.masked == 16 and sf.visible == 16
    cfg.method = "bestrq-vit"
    assert step_flops(cfg, 4, S, 0.5).visible == 32
    base = step_flops(micro_config(), 4, S)  # default: the mean of ratio_min and ratio_max
    assert base.masked == round(0.5 * 32)


def test_peak_table():
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == (989.4, "H100 SXM")
    assert peak_bf16_tflops("NVIDIA H100 PCIe")[0] == 756.0
    assert peak_bf16_tflops("NVIDIA H100 NVL")[0] == 835.0
    assert peak_bf16_tflops("NVIDIA H200")[0] == 989.4
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert peak_bf16_tflops("NVIDIA L40S")[0] == 362.0
    assert peak_bf16_tflops("NVIDIA L4")[0] == 121.0
    assert peak_bf16_tflops("NVIDIA A10")[0] == 125.0
    assert peak_bf16_tflops("NVIDIA A10G") is None and peak_bf16_tflops("NVIDIA L40") is None
    assert resolve_peak(torch.device("cpu"), 2.5)[0] == 2.5


def test_cpu_peak_is_the_measured_matmul_rate():
    tflops, source = resolve_peak(torch.device("cpu"), None)
    assert 1e-4 < tflops < 100 and source.startswith("measured fp32")
    small = measure_matmul_tflops(torch.device("cpu"), n=128, repeats=3)
    assert small > 0


@pytest.mark.parametrize("overrides", [{}, {"frontend__patch_freq": 128, "frontend__patch_time": 4, "encoder__mlp": "swiglu"}])
def test_inference_flops_match_counter(overrides):
    cfg = micro_config(**overrides)
    enc = inference_encoder("vit", cfg.frontend, cfg.encoder, None, "mean").eval()
    B, S = 2, 3 * 16000
    with torch.no_grad():
        n = counted(lambda: enc(torch.randn(B, S)))
    assert n == pytest.approx(inference_flops(cfg, B, S), rel=1e-6)
    cfg.method = "bestrq-conformer"
    assert inference_flops(cfg, B, S) is None


@pytest.mark.parametrize("true_max", [0, 1, 7, 8, 15, 100, 257, 1000, 70000])
def test_search_max_batch(true_max):
    tried = []

    def fits(b: int) -> bool:
        tried.append(b)
        return b <= true_max

    batch, at_limit = search_max_batch(fits, start=16, limit=65536, step=8)
    assert at_limit == (true_max >= 65536)
    if true_max < 8:
        assert batch == true_max
    else:
        assert batch <= min(true_max, 65536) < batch + 8 and (batch % 8 == 0 or batch == 65536)
    assert len(tried) <= 30


def test_fitted_codebooks_count_their_own_assignment(tmp_path):
    """quantizer.centroids: no projection, every band's input against every centroid."""
    from bestrq2.quantizer import save_centroids

    cfg = micro_config(quantizer__bands=2)
    T, V, D = cfg.quantizer.num_targets, cfg.quantizer.codebook_size, cfg.frontend.patch_dim // 2
    path = tmp_path / "c.safetensors"
    save_centroids(path, torch.randn(T, V, D), cfg.quantizer, {})
    cfg.quantizer.centroids = str(path)
    n, sf = _step_count(cfg.validate())
    assert n == pytest.approx(sf.model, rel=1e-6)
    B = 2  # _step_count's batch
    assert sf.by_part()["quantizer"] == pytest.approx(2.0 * B * sf.masked * T * V * D, rel=1e-6)
