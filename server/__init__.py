"""The pfs server: storage, metadata, the versioned store, and its gRPC services.

Imports pfs.core (and the generated protos in rpc); never pfs.client, pfs.vfs or pfs.fuse.
"""

# first, so that pfs/__init__.py sets gRPC's logging before any of the server loads grpc
from pfs import __version__

__all__ = ["__version__"]
