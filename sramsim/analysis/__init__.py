"""Studies over many fault maps: voltage sweeps (executors, result store), vulnerability, energy and
access counts, plots."""
