"""Framework-side checks, run in the frameworks environment (see framework_check.py)."""
