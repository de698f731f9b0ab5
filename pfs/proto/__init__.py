"""Generated gRPC code (by protos/generate.py; do not edit) and its model conversions.

Imported only by the client and the servicers.
"""
