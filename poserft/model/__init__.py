"""The policy: the pose-generating multimodal LM, its checkpoints, LoRA adapters and generation.

Both the learner and the rollout workers build on this package; neither imports the other.
See docs/architecture.md.
"""
