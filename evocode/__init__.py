"""evocode: evolve training scripts by editing their source code."""

__version__ = "0.2.0.dev0"
