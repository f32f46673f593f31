"""Inference serving: a task's `inference` block (requests, concurrency, precisions, the engine),
serving plans (TP, PP, data-parallel replicas, batch limits) and their cost (prefill, decode
step, KV-cache memory, throughput, TTFT and TPOT).

Dense decoder models only in this slice: a mixture-of-experts model is refused where the
problem is loaded (planner.serving.problem).
"""
