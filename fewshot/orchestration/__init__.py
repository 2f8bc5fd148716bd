"""The only package that talks to Ray: Ray Train workers, sweeps and (later) Tune studies."""
