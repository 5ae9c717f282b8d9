"""A small client of the reward service (`poserft serve-reward`), documented in docs/reward_service.md.

    from poserft.reward_service.client import IDENTITY_POSE_6D, POSE_RESPONSE, RewardClient

    with RewardClient("127.0.0.1:50051", token="s3cret") as client:
        [score] = client.score([{"task": "text2pose", "text": POSE_RESPONSE, "has_pose": True,
                                 "pose": IDENTITY_POSE_6D, "caption": "The person stands.",
                                 "reference_text": POSE_RESPONSE}])
        print(score.total, score.components)

It needs only grpcio and the generated stubs (no torch, numpy or the models). Errors the server
returns become `RewardServiceError` with the gRPC status name (`INVALID_ARGUMENT`,
`UNAUTHENTICATED`, `UNAVAILABLE`, ...) and the server's one-line message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from poserft.reward_service.proto import reward_pb2, reward_pb2_grpc

TOKEN_ENV = "POSERFT_REWARD_TOKEN"
POSE_TOKEN = "<POSE>"
POSE_RESPONSE = f"The SMPL pose of this person is {POSE_TOKEN}."  # the template the format reward checks
JOINTS = 24
POSE_6D_DIM = JOINTS * 6  # per joint the first two columns of its rotation matrix: (R[:,0], R[:,1])
TARGET_JOINTS_DIM = JOINTS * 3  # joint positions in metres, joint-major: x0, y0, z0, x1, ...
IDENTITY_POSE_6D = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] * JOINTS  # every joint unrotated


class RewardServiceError(RuntimeError):
    """The server refused or failed a call; `code` is the gRPC status name."""

    def __init__(self, code: str, details: str):
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


@dataclass
class Score:
    id: str
    components: dict[str, float]  # only the components that apply to the sample's task
    total: float | None  # None when the sample could not be scored
    error: str | None  # why not; None when scored


def sample(
    task: str, text: str, *, pose=None, caption: str = "", reference_text: str = "", target_joints=None, id: str = ""
) -> reward_pb2.Sample:
    """One Sample message; `has_pose` is set when a pose is given."""
    pose = list(pose) if pose is not None else []
    if pose and len(pose) != POSE_6D_DIM:
        raise ValueError(f"pose has {len(pose)} values; the service takes {POSE_6D_DIM} (24 joints x 6D)")
    target = list(target_joints) if target_joints is not None else []
    if target and len(target) != TARGET_JOINTS_DIM:
        raise ValueError(
            f"target_joints has {len(target)} values; the service takes {TARGET_JOINTS_DIM} (24 joints x 3, metres)"
        )
    return reward_pb2.Sample(
        id=id,
        task=task,
        text=text,
        has_pose=bool(pose),
        pose=pose,
        caption=caption,
        reference_text=reference_text,
        target_joints=target,
    )


class RewardClient:
    """`RewardClient("HOST:PORT", token).score(samples)`: one call scores a batch, in order."""

    def __init__(
        self, address: str, token: str | None = None, root_cert: str | Path | None = None, timeout_s: float = 60.0
    ):
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        if root_cert is not None:
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(Path(root_cert).read_bytes()))
        else:
            self.channel = grpc.insecure_channel(address)
        self.stub = reward_pb2_grpc.RewardServiceStub(self.channel)
        self.timeout_s = timeout_s

    def score(self, samples: list[dict | reward_pb2.Sample]) -> list[Score]:
        """Dicts take the keys of `sample()` (task, text, pose, caption, reference_text, target_joints, id)."""
        msgs = [s if isinstance(s, reward_pb2.Sample) else sample(**s) for s in samples]
        for i, m in enumerate(msgs):
            m.id = m.id or str(i)
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        try:
            response = self.stub.Score(reward_pb2.ScoreRequest(samples=msgs), timeout=self.timeout_s, metadata=metadata)
        except grpc.RpcError as err:
            raise RewardServiceError(err.code().name, err.details() or "") from None
        return [
            Score(s.id, dict(s.components), s.total if s.HasField("total") else None, s.error or None)
            for s in response.scores
        ]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
