"""V2 methods grouped by resource; servicer.py gathers every function decorated with @rpc."""
