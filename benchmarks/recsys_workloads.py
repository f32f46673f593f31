"""Synthetic DLRM workloads for the embedding-sharding benchmarks.

`heterogeneous_856` follows the published aggregate statistics of Meta's dlrm_datasets (856
tables in the 2021 release; 13.6 ids per table per sample on average in the 2022 release;
rows = max(max index + 1, 100) as DreamShard reads them; ../shared/reference/recsys.md sec. A.6):
rows log-uniform over [100, 4e7] (the hashed-table range of the Criteo and MLPerf models), pooling
factors log-normal with mean 13.6, dims drawn from {16, 32, 64, 128} as NeuroShard augments
them. The per-table traces themselves are not public in a form read here, so this is a
statistically shaped stand-in, not the trace.
"""

from __future__ import annotations

import numpy as np

from planner.core.inputs import load_cluster
from planner.recsys.model import Dlrm
from planner.recsys.problem import RecsysProblem
from planner.recsys.task import RecsysTraining


def heterogeneous_tables(num_tables: int = 856, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = np.exp(rng.uniform(np.log(100), np.log(4e7), num_tables)).astype(int)
    sigma = 1.0
    pooling = rng.lognormal(np.log(13.6) - sigma**2 / 2, sigma, num_tables)
    dims = rng.choice([16, 32, 64, 128], num_tables)
    return [{"name": f"f{i}", "num_rows": int(r), "dim": int(d), "pooling_factor": round(float(p), 2)}
            for i, (r, d, p) in enumerate(zip(rows, dims, pooling, strict=True))]


def heterogeneous_problem(num_tables: int = 856, num_devices: int = 64, seed: int = 0,
                          cluster: str = "dgx-h100", batch_per_rank: int = 1024) -> RecsysProblem:
    model = Dlrm(name=f"heterogeneous-{num_tables}", num_dense_features=13, bottom_mlp=[512, 256, 128],
                 interaction={"type": "concat"}, top_mlp=[1024, 1024, 512, 256, 1],
                 tables=heterogeneous_tables(num_tables, seed), embedding_dtype="fp16")
    return RecsysProblem(model=model, cluster=load_cluster(cluster, num_devices=num_devices),
                         task=RecsysTraining(global_batch_size=batch_per_rank * num_devices, dense_precision="bf16"))
