"""pfs.vfs: repos and commits (or a shard of one) as a file tree: inodes, attributes, reads.

Synchronous and thread-safe; it talks to the server only through pfs.client.
It knows nothing of FUSE: pfs.fuse translates its answers and errors.
"""
