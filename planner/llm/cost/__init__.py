"""The one cost model. Every formula that prices a plan lives in this package.

Modules: `flops` (parameter and FLOP counts per layer kind), `kernels` (time of GEMMs,
attention and memory-bound kernels on one device), `collectives` (alpha-beta collectives over
network tiers), `memory` (bytes per GPU per stage), `pipeline` (schedules), `step` (the
assembled step time with overlap), `breakdown` (the result types).

All functions are written with numpy operations so that the same code prices one plan
(Python scalars) or tens of thousands of candidate plans at once (numpy arrays).
"""
