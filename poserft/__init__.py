"""poserft: distributed reinforcement fine-tuning (Pose-RFT / HyGRPO) for pose-generating MLLMs.

`from poserft import PosePipeline` gives the inference API (see docs/inference.md); it is
imported on first use, so `import poserft` stays light.
"""

__version__ = "0.1.0"
__all__ = ["PosePipeline", "__version__"]


def __getattr__(name: str):
    if name == "PosePipeline":
        from poserft.inference.pipeline import PosePipeline

        return PosePipeline
    raise AttributeError(f"module 'poserft' has no attribute {name!r}")
