"""Hydra config tree (a package so installed console scripts find it as pkg://configs)."""
