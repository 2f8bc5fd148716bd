"""One generic training loop, checkpoints and reporters."""
