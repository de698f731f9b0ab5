"""pfs.fuse: the pyfuse3 adapter only: handlers, errno mapping, mount and unmount.

All decisions about what the tree holds are pfs.vfs's; this layer translates.
"""
