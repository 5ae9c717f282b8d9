"""Data: the synthetic benchmark (pose prior, captioner, renderer, builder) and the importers
of real data sets. Every producer writes the contract of `poserft.common.schemas`.
"""
