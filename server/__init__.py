"""The pfs server: storage, metadata, the versioned store, and its gRPC services.

Imports pfs.core (and the generated protos in rpc); never pfs.client, pfs.vfs or pfs.fuse.
"""
