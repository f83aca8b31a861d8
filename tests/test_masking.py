import torch

from bestrq2.config import MaskConfig
from bestrq2.masking import mask_generator, sample_masks


def _check_partition(m, padding):
    B, N = padding.shape
    for i in range(B):
        ids = torch.cat([m.ids_keep[i], m.ids_mask[i]]).sort().values
        assert torch.equal(ids, torch.arange(N)), "visible and masked tokens partition the grid"
        assert torch.equal(m.keep_pad[i], padding[i, m.ids_keep[i]])
        assert torch.equal(m.mask_pad[i], padding[i, m.ids_mask[i]])


def test_shapes_ratio_and_partition():
    padding = torch.zeros(8, 128, dtype=torch.bool)
    for step in range(20):
        m = sample_masks(padding, MaskConfig(), mask_generator(0, 0, step))
        assert 0.4 <= m.ratio <= 0.6
        K, M = m.ids_keep.shape[1], m.ids_mask.shape[1]
        assert K + M == 128 and M == round(m.ratio * 128)
        assert m.ids_keep.shape == (8, K) and not m.keep_pad.any() and not m.mask_pad.any()
        _check_partition(m, padding)


def test_reproducible_and_different_per_rank_example_step():
    padding = torch.zeros(4, 128, dtype=torch.bool)
    a = sample_masks(padding, MaskConfig(), mask_generator(1, 0, 5))
    b = sample_masks(padding, MaskConfig(), mask_generator(1, 0, 5))
    assert torch.equal(a.ids_mask, b.ids_mask) and a.ratio == b.ratio
    other_rank = sample_masks(padding, MaskConfig(), mask_generator(1, 1, 5))
    other_step = sample_masks(padding, MaskConfig(), mask_generator(1, 0, 6))
    assert (a.ratio, a.ids_mask.tolist()) != (other_rank.ratio, other_rank.ids_mask.tolist())
    assert (a.ratio, a.ids_mask.tolist()) != (other_step.ratio, other_step.ids_mask.tolist())
    sets = {tuple(sorted(r.tolist())) for r in a.ids_mask}
    assert len(sets) == 4, "every example gets its own mask"


def test_padding_tokens_are_never_real_targets():
    N = 128
    padding = torch.zeros(5, N, dtype=torch.bool)
    padding[1, 64:] = True  # half
    padding[2, 8:] = True  # one token column
    padding[3, 1:] = True  # a single real token
    padding[4, 120:] = True
    cfg = MaskConfig(ratio_min=0.5, ratio_max=0.5)
    m = sample_masks(padding, cfg, mask_generator(0, 0, 0))
    _check_partition(m, padding)
    real_masked = (~m.mask_pad).sum(1)
    real_visible = (~m.keep_pad).sum(1)
    n_real = (~padding).sum(1)
    assert torch.equal(real_masked + real_visible, n_real)
    assert real_masked.tolist() == [64, 32, 4, 0, 60]
    assert (real_visible >= 1).all(), "every example keeps a real token visible"


def test_scored_rows_are_the_real_masked_slots():
    """The host-computed scored index selects exactly what boolean indexing on mask_pad would."""
    from bestrq2.objectives.bestrq2 import real_rows

    padding = torch.zeros(4, 40, dtype=torch.bool)
    padding[1, 25:] = True
    padding[3, 10:] = True
    m = sample_masks(padding, MaskConfig(), mask_generator(0, 0, 1))
    moved = m.to("cpu")
    assert m.any_padding and moved.scored is not None and len(moved.scored) == m.num_scored
    x = torch.randn(4, m.ids_mask.shape[1], 3)
    torch.testing.assert_close(real_rows(x, moved), x[~m.mask_pad])
    torch.testing.assert_close(real_rows(x, m), x[~m.mask_pad])
