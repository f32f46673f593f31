"""How well the cost model matches reality: `validate` against published runs, `calibrate` of the
hardware efficiencies from microbenchmarks, and the schemas of their data files (measured)."""
