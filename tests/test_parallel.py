"""Wrappers applied from outside the model change nothing of the maths (one process, CPU)."""

from __future__ import annotations

import pytest
import torch

from bestrq2.config import ParallelConfig
from bestrq2.masking import mask_generator
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.training.distributed import DistInfo
from bestrq2.training.optim import build_optimizer
from bestrq2.training.parallel import blocks_of, full_state, load_optimizer_state, prepare_model
from tests.conftest import micro_config

ONE = DistInfo(0, 1, 0, torch.device("cpu"))


def _batch(cfg, B: int = 3):
    S = int(cfg.data.crop_seconds * cfg.frontend.sample_rate)
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(B, S, generator=g) * 0.1
    lengths = torch.tensor([S, S // 2, S - 1234])[:B]
    return wav, lengths, sample_batch_masks(cfg, lengths, S, mask_generator(0, 0, 0))


def _loss_and_grads(model, batch, seed: int = 7):
    torch.manual_seed(seed)  # drop-path draws
    out = model(*batch)
    out["loss"].backward()
    named = model.named_parameters()
    grads = {n.replace("._checkpoint_wrapped_module", ""): p.grad.clone() for n, p in named if p.grad is not None}
    return float(out["loss"].detach()), grads


@pytest.mark.parametrize("method", ["bestrq2", "bestrq-conformer", "audiojepa"])
def test_activation_checkpointing_gives_the_same_gradients(method):
    cfg = micro_config(encoder__drop_path=0.3)  # drop-path: the recompute must replay the same draws
    cfg.method = method
    torch.manual_seed(0)
    plain = build_objective(cfg).train()
    ckpt = build_objective(cfg).train()
    ckpt.load_state_dict(plain.state_dict())
    wrapped = prepare_model(ckpt, ParallelConfig(activation_checkpointing=True), ONE)
    n_blocks = len(blocks_of(plain))
    assert n_blocks > 0 and sum(type(m).__name__ == "CheckpointWrapper" for m in ckpt.modules()) == n_blocks
    assert ckpt.state_dict().keys() == plain.state_dict().keys()  # checkpoints keep plain names
    batch = _batch(cfg)
    la, ga = _loss_and_grads(plain, batch)
    lb, gb = _loss_and_grads(wrapped, batch)
    assert la == pytest.approx(lb, rel=1e-6)
    assert ga.keys() == gb.keys()
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], rtol=1e-5, atol=1e-7, msg=k)


def test_full_state_round_trip():
    cfg = micro_config()
    model = build_objective(cfg)
    prepare_model(model, ParallelConfig(activation_checkpointing=True), ONE)
    opt = build_optimizer(model, cfg.optim, ONE.device)
    _loss_and_grads(model, _batch(cfg))
    opt.step()
    model_state, optim_state = full_state(model, opt)
    assert model_state.keys() == build_objective(cfg).state_dict().keys()
    fresh = build_objective(cfg)
    fresh.load_state_dict(model_state)
    opt2 = build_optimizer(fresh, cfg.optim, ONE.device)
    load_optimizer_state(fresh, opt2, optim_state)
    for (n, p), (_, q) in zip(model.named_parameters(), fresh.named_parameters()):
        torch.testing.assert_close(opt.state[p]["exp_avg"], opt2.state[q]["exp_avg"], msg=n)


@pytest.mark.slow
def test_compiled_blocks_match_eager():
    cfg = micro_config()
    torch.manual_seed(0)
    eager = build_objective(cfg).train()
    comp = build_objective(cfg).train()
    comp.load_state_dict(eager.state_dict())
    prepare_model(comp, ParallelConfig(compile=True), ONE)
    batch = _batch(cfg)
    la, ga = _loss_and_grads(eager, batch)
    lb, gb = _loss_and_grads(comp, batch)
    assert la == pytest.approx(lb, rel=1e-4)
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], rtol=1e-3, atol=1e-5, msg=k)


def test_blocks_with_different_drop_path_rates_share_compiled_graphs():
    """Each block has its own stochastic-depth rate. The rate must be data, not a guarded constant, or a
    12-block encoder compiles one graph per block, hits dynamo's recompile limit (8) and leaves the
    later blocks uncompiled (what the float attribute did: 9 graphs and the limit warning)."""
    from bestrq2.models.layers import Block

    graphs = []
    aot_eager = torch._dynamo.lookup_backend("aot_eager")  # AOT autograd as inductor uses it, no codegen

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return aot_eager(gm, example_inputs)

    cfg = micro_config()
    cfg.encoder.depth, cfg.encoder.drop_path = 12, 0.1
    torch.manual_seed(0)
    model = build_objective(cfg.validate()).train()
    torch._dynamo.reset()
    for m in model.modules():
        if isinstance(m, Block):
            m.compile(backend=counting_backend)
    S = int(cfg.data.crop_seconds * cfg.frontend.sample_rate)
    wav, lengths = torch.randn(2, S) * 0.1, torch.full((2,), S)
    for step in range(4):  # the visible-token count changes with each batch's mask ratio
        model(wav, lengths, sample_batch_masks(cfg, lengths, S, mask_generator(0, 0, step)))["loss"].backward()
    torch._dynamo.reset()
    assert len(graphs) <= 6  # encoder / predictor blocks, rate 0 or not, static then dynamic length
