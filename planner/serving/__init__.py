"""Inference serving: a task's `inference` block (requests, concurrency, precisions, the engine),
serving plans (TP, PP, data-parallel replicas, expert parallelism and data-parallel attention
for mixture-of-experts models, batch limits) and their cost (prefill, decode step, KV-cache
memory, throughput, TTFT and TPOT).

Dense decoders and mixture-of-experts decoders (GQA or DeepSeek's MLA attention); the MoE
pieces are in planner.serving.moe (shapes, weights, the KV cache, expected experts touched)
and planner.serving.moe_forward (one pass of an MoE stage).
"""
