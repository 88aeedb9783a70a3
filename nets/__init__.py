"""Network building blocks shared by the roles (critics, potentials): a leaf package that
imports nothing of the project."""

from nets.mlp import mlp

__all__ = ["mlp"]
