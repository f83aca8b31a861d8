"""Run logs: a CSV file (one row per logged step) and TensorBoard scalars, written by rank 0."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = [
    "step", "loss", "acc", "lr", "grad_norm", "clips_per_s", "mask_ratio",
    "codes_used", "perplexity", "skipped_files", "crop_redraws", "bad_steps", "elapsed_s",
]


class RunLogger:
    """``extra_columns`` (e.g. the online probe's ``probe_knn/<task>``) follow :data:`COLUMNS` in the CSV
    header, which is written once: keys of a row outside the header go to TensorBoard only."""

    def __init__(
        self, run_dir: Path, resume_step: int = 0, tensorboard: bool = True, extra_columns: list[str] | tuple[str, ...] = ()
    ):
        self.path = run_dir / "log.csv"
        self.columns = COLUMNS + [c for c in extra_columns if c not in COLUMNS]
        rows = []
        if resume_step and self.path.exists():  # drop rows a crashed run wrote after its last checkpoint
            with self.path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow({k: row.get(k, "") for k in self.columns})
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"train/{k}", v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(run_dir: str | Path) -> list[dict[str, float]]:
    with (Path(run_dir) / "log.csv").open() as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
