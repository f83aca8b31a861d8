"""Pretraining: the explicit loop (:mod:`.loop`), optimiser and schedule (:mod:`.optim`), checkpoints
(:mod:`.checkpoint`), process-group set-up (:mod:`.distributed`), DDP/FSDP2, activation checkpointing and
compile (:mod:`.parallel`), and run logs (:mod:`.logs`)."""

from bestrq2.training.loop import TrainResult, pretrain

__all__ = ["TrainResult", "pretrain"]
