"""Plain-text and JSON renderings: a priced plan (estimate) and solver results (solve)."""
