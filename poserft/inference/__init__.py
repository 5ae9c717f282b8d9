"""Poses out of a trained checkpoint: the Python API (`pipeline`), the files (`exports`), the
`poserft generate` folders (`generate`) and the HTTP server with its playground (`server`)."""
