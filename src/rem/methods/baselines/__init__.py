"""Baselines of SPEC §5 (each module registers its methods)."""
