"""poserft: distributed reinforcement fine-tuning (Pose-RFT / HyGRPO) for pose-generating MLLMs."""

__version__ = "0.1.0"
