"""LLM training (dense today; mixture-of-experts next): the model, task and plan schemas, the
problem, the cost model (cost/), the search space priced in bulk (candidates), the pruning
bounds and the per-stage tables the exact solvers use."""
