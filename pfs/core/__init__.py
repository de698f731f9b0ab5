"""pfs.core: pure code shared by every layer. It does no I/O of its own and imports no other layer."""
