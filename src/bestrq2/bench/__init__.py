"""Measuring speed: training/inference throughput (:mod:`.throughput`), analytic FLOPs (:mod:`.flops`),
the largest batch that fits (:mod:`.maxbatch`), the data loader alone (:mod:`.loader`) and device peaks
and memory (:mod:`.devices`). Nothing outside ``bench`` and the CLI imports these."""
