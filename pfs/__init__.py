"""pfs: a versioned data store and data-driven pipeline system."""

__version__ = "0.1.0"
