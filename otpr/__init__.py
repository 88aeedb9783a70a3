"""otpr: optimal-transport-guided RL fine-tuning of diffusion robot policies."""

__version__ = "0.1.0"
