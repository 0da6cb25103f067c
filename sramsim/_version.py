"""The one version of the sramsim distribution (sramsim and fusion); setup.cfg reads it here."""
__version__ = "0.2.0"
