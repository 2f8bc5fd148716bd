"""Plots: comparison bars with error bars, learning curves, t-SNE. Rendered off-screen (Agg)."""

import matplotlib

matplotlib.use("Agg")
