"""Context check: how much of a pretrained encoder's gain over its random floor needs context?

    python scripts/context_check.py EXPORT random:EXPORT:SEED ...

For each model, the suite is embedded twice: as usual (every token attends to its chunk), and with every
token alone (the encoder run on sequences of one token, so attention can only return the token itself;
with rotary positions this is exact). A gain that survives "alone" is a better per-patch feature map of
log-mel; a gain that needs context is what masked prediction is meant to teach. Diagnostic only.
"""

import sys

import torch
from torch import nn

from bestrq2.evaluation.embeddings import embed_clips
from bestrq2.evaluation.models import resolve_model
from bestrq2.evaluation.report import aggregate
from bestrq2.evaluation.runner import EvalConfig, score_task
from bestrq2.evaluation.tasks import load_suite
from bestrq2.inference import batch_with_lengths, split_chunks, _frames_for


class TokensAlone(nn.Module):
    """The wrapped BestRQ2Encoder with every token encoded on its own."""

    def __init__(self, enc: nn.Module):
        super().__init__()
        self.enc = enc
        self.sampling_rate, self.output_dim, self.hop_size_in_ms = enc.sampling_rate, enc.output_dim, enc.hop_size_in_ms

    def output_lengths(self, lengths):
        return self.enc.output_lengths(lengths)

    def forward(self, wav, lengths=None):
        e = self.enc
        wav, lengths = batch_with_lengths(wav, lengths)
        B, T = wav.shape
        n_out = _frames_for(T, e.frontend_cfg.samples_per_token)
        pieces, piece_len, n_chunks = split_chunks(wav, lengths, e.chunk_samples)
        feats = e.frontend(pieces, piece_len)
        fb, tb = feats["grid"]
        p = feats["patches"]  # [B*nc, N, P]
        tokens = e.encoder(p.reshape(-1, 1, p.shape[-1]), (1, 1)).reshape(p.shape[0], p.shape[1], -1)
        return e._pool(tokens.float(), B, n_chunks, fb, tb)[:, :n_out]


def main() -> None:
    suite = load_suite("data/suite")
    paths = [suite.root / pth for pth in suite.clip_paths()]
    torch.set_num_threads(1)
    for spec in sys.argv[1:]:
        m = resolve_model(spec)
        for kind, build, key in [("context", m.build, m.key), ("alone", lambda: TokensAlone(m.build()), m.key + "-alone")]:
            fr, _ = embed_clips(build, key, paths, None, "cpu", None, 120.0, 2, False)
            res = {t.name: score_task(t, fr, suite.root, 156.25, EvalConfig()) for t in suite.tasks}
            _, o = aggregate(res)
            per = {k: (round(v["mlp"], 3), round(v["knn"], 3)) for k, v in res.items()}
            print(f"{spec} {kind:8s} probe {o['mlp']:.3f} knn {o['knn']:.3f} {per}", flush=True)


if __name__ == "__main__":
    main()
