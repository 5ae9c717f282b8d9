"""One command that exercises, on a GPU machine, every GPU path of poserft that runs without vLLM.

    python benchmarks/gpu_check.py            # on CUDA (fails at once if CUDA is unusable)
    python benchmarks/gpu_check.py --cpu      # the same steps on the CPU (tests run this)

Steps (each timed, a table of pass/fail at the end; exit 1 if any failed):
- cuda: torch, its CUDA build, the driver and the device (the CUDA-usable check of
  `poserft.common.device`);
- learner step: `LearnerCore.train_step` on a scored batch, then the policy's forward/backward
  under bf16 autocast;
- hygrpo loss: with valid poses and with none (the empty-V summary once mixed devices);
- process group of one: NCCL on CUDA, gloo on CPU, one all-reduce;
- checkpoint round trip: save, resume, same parameters, RNG states (CUDA's too) and version;
- weight publish: the learner's published state (fp32 and in the engine dtype) through a
  safetensors file in /dev/shm, read back; bytes for the tiny and base presets;
- poserft plan: every config in configs/ accepted.
A tiny dataset and checkpoint are built in a temporary folder (about a minute); nothing is
downloaded. Under 5 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _scored_batch(policy, version: int, seed: int, with_poses: bool = True):
    import numpy as np
    import pyarrow as pa

    from poserft.common.schemas import POSE_RESPONSE

    rng = np.random.default_rng(seed)
    rows = []
    for g, prompt in enumerate(["The left knee is bent.", "Both arms are raised."]):
        ids, resp = (
            policy.encode_prompt(f"Create the SMPL pose that matches this text. {prompt}"),
            policy.encode_response(POSE_RESPONSE),
        )
        for i in range(4):
            rows.append(
                {
                    "task_id": f"t{g}",
                    "group_id": f"t{g}@v{version}",
                    "sample_index": i,
                    "policy_version": version,
                    "worker_id": "w",
                    "prompt_tokens": ids,
                    "response_tokens": resp,
                    "token_logprobs": [-1.0] * len(resp),
                    "text": "",
                    "has_pose": with_poses,
                    "pose": (np.tile([1.0, 0, 0, 0, 1, 0], 24) + 0.1 * rng.normal(size=144)).tolist()
                    if with_poses
                    else None,
                    "pose_logprob": -150.0 if with_poses else None,
                    "error": None,
                    "reward_format": 1.0,
                    "reward_semantic": float(rng.random()),
                    "reward_joint": None,
                    "reward_total": float(rng.random()),
                    "task": "text2pose",
                    "image": None,
                    "target_pose": [0.0] * 72,
                }
            )
    return pa.Table.from_pylist(rows)


class Checks:
    def __init__(self):
        self.rows: list[tuple[str, bool, float, str]] = []

    def run(self, name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            detail = fn() or ""
            ok = True
        except Exception as err:  # noqa: BLE001 (a check that fails is reported, the others still run)
            traceback.print_exc()
            detail, ok = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:110], False
        self.rows.append((name, ok, time.perf_counter() - t0, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}  ({time.perf_counter() - t0:.1f} s)  {detail}", flush=True)

    def table(self) -> str:
        lines = [f"{'check':<28}{'result':<8}{'seconds':>8}  detail"]
        lines += [f"{n:<28}{'pass' if ok else 'FAIL':<8}{s:>8.1f}  {d}" for n, ok, s, d in self.rows]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run every step on the CPU (gloo instead of NCCL)")
    ap.add_argument(
        "--work-dir", default=None, help="folder for the tiny data and checkpoints (default: a temporary one)"
    )
    args = ap.parse_args(argv)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: even a GPU machine runs on the CPU
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from poserft.common.device import cuda_problem, driver_version

    if not args.cpu and cuda_problem() is not None:
        print(
            f"gpu_check: CUDA is unusable ({cuda_problem()}); NVIDIA driver {driver_version()}, "
            f"torch {torch.__version__} "
            f"built for CUDA {torch.version.cuda or 'none'}; run with --cpu to check the CPU paths",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    with tempfile.TemporaryDirectory(prefix="poserft-gpu-check-") as tmp:
        work = Path(args.work_dir or tmp)
        return _run_checks(device, work)


def _run_checks(device, work: Path) -> int:
    import torch

    from poserft.common.config import ModelConfig, RLConfig, load_config
    from poserft.common.device import driver_version
    from poserft.learner.learner import LearnerCore

    checks = Checks()
    state: dict = {}

    def cuda_info():
        versions = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, driver {driver_version()}"
        return f"{'cpu run' if device.type == 'cpu' else torch.cuda.get_device_name(0)}; {versions}"

    def setup():
        from poserft.data.dataset import build_dataset
        from poserft.model.checkpoint import init_policy, save_policy

        data = work / "data"
        if not (data / "card.json").is_file():
            build_dataset(data, seed=0, train_poses=200, val_poses=16, test_poses=16, progress=False)
        for preset in ("tiny", "base"):
            if not (work / preset / "poserft.json").is_file():
                save_policy(init_policy(preset, data, seed=0), work / preset)
        state["ckpt"] = work / "tiny"
        return f"data and tiny/base checkpoints in {work}"

    def learner_step():
        settings = RLConfig(lr=1e-3, updates_per_batch=2, micro_batch_size=4, beta=0.01, beta_c=0.01)
        learner = LearnerCore(str(state["ckpt"]), settings, model=ModelConfig())
        assert learner.device.type == device.type, f"learner on {learner.device}, expected {device}"
        before = learner.parameter_checksum()
        m = learner.train_step(_scored_batch(learner.policy, learner.version, seed=0))
        assert learner.parameter_checksum() != before and all(
            torch.isfinite(torch.tensor(v)) for v in m.values() if isinstance(v, float)
        )
        rows = _scored_batch(learner.policy, learner.version, seed=1)
        inp = learner.policy.build_inputs(
            [r["prompt_tokens"] for r in rows.to_pylist()],
            [r["response_tokens"] for r in rows.to_pylist()],
            [None] * rows.num_rows,
            [None] * rows.num_rows,
        )
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = learner.policy(inp)
        (out["token_logp"].sum() + out["mu"].float().sum()).backward()
        state["learner"] = learner
        return f"loss {m['loss']:.3f}, grad_norm {m['grad_norm']:.3f}; bf16 autocast forward/backward ok"

    def loss_check(valid: bool):
        from poserft.common.schemas import POSE_DIM
        from poserft.learner.hygrpo import HyGRPOBatch, hygrpo_loss

        b, t, p = 4, 5, 4
        g = torch.Generator().manual_seed(0)
        x = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
        logp = x(b, t).requires_grad_()
        mu = x(p, POSE_DIM).requires_grad_()
        batch = HyGRPOBatch(
            logp=logp,
            old_logp=x(b, t),
            mask=torch.ones(b, t, dtype=torch.bool, device=device),
            adv_discrete=x(b),
            ref_logp=x(b, t),
            pose=x(p, POSE_DIM),
            mu=mu,
            log_std=x(p, POSE_DIM) * 0.1,
            old_pose_logp=x(p) - 150,
            valid=torch.full((p,), valid, device=device),
            adv_continuous=x(p),
            ref_mu=x(p, POSE_DIM),
            ref_log_std=x(p, POSE_DIM) * 0.1,
        )
        loss, stats = hygrpo_loss(batch, beta=0.01, beta_c=0.01)
        loss.backward()
        assert loss.device.type == device.type and logp.grad is not None
        return f"loss {float(loss):.3f}, pose_valid_frac {stats['pose_valid_frac']:.2f}"

    def process_group():
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"file://{work / 'pg'}", rank=0, world_size=1)
        try:
            t = torch.ones(3, device=device)
            dist.all_reduce(t)
            assert t.sum().item() == 3
        finally:
            dist.destroy_process_group()
            (work / "pg").unlink(missing_ok=True)
        return f"{backend} all_reduce ok"

    def checkpoint():
        learner = state["learner"]
        out = learner.save(str(work / "ckpt_rl"))
        back = LearnerCore(str(state["ckpt"]), learner.s, resume_dir=out, model=ModelConfig())
        assert abs(back.parameter_checksum() - learner.parameter_checksum()) < 1e-6 and back.version == learner.version
        saved = torch.load(Path(out) / "learner_state.pt", weights_only=False)
        assert (saved["cuda_rng"] is not None) == (device.type == "cuda"), "CUDA RNG state not saved"
        rng = "saved" if saved["cuda_rng"] is not None else "n/a on CPU"
        return f"version {back.version}, parameters equal, CUDA RNG {rng}"

    def publish():
        from safetensors.torch import load_file, save_file

        from poserft.model import lora
        from poserft.model.checkpoint import load_policy

        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else work
        parts = []
        for preset in ("tiny", "base"):
            policy = load_policy(work / preset).to(device)
            for dtype in (torch.float32, torch.bfloat16):
                lm = {k: v.detach().to("cpu", dtype) for k, v in policy.lm.state_dict().items()}
                full = sum(v.numel() * dtype.itemsize for v in policy.state_dict().values())
                path = shm / f"poserft-gpu-check-{preset}.safetensors"
                save_file(lm, str(path))
                back = load_file(str(path))
                path.unlink()
                assert all(torch.equal(back[k], lm[k]) for k in lm)
                parts.append(
                    f"{preset} {str(dtype)[6:]}: state {full / 1e6:.1f} MB, LM file {lora.state_bytes(lm) / 1e6:.1f} MB"
                )
        learner = state["learner"]
        learner.publish()
        return "; ".join(parts) + f"; learner.publish {learner.published_bytes / 1e6:.1f} MB"

    def broadcast():
        """rl.rollout.weight_sync broadcast: a weight channel of two members (two threads), the
        learner's state sent in the engine's dtype. NCCL needs a GPU per member."""
        import threading

        from poserft.common.device import resolve_dtype
        from poserft.common.weight_channel import WeightChannel, endpoint, receive_state, send_state, tensor_meta
        from poserft.model.checkpoint import load_policy

        if device.type == "cuda" and torch.cuda.device_count() < 2:
            return "n/a: an NCCL channel needs two GPUs (sender and receiver)"
        devices = [device, device] if device.type == "cpu" else [torch.device("cuda", 0), torch.device("cuda", 1)]
        ep = endpoint()
        chans: list = [None, None]

        def join(rank):
            chans[rank] = WeightChannel.open(ep["master_address"], ep["master_port"], rank, 2, devices[rank])

        threads = [threading.Thread(target=join, args=(r,)) for r in (0, 1)]
        [t.start() for t in threads]
        [t.join(120) for t in threads]
        parts = []
        for preset in ("tiny", "base"):
            policy = load_policy(work / preset).to(devices[0])
            dtype = getattr(torch, resolve_dtype("auto", devices[0]))
            state = {
                k: v.detach().to(dtype if v.is_floating_point() else v.dtype) for k, v in policy.state_dict().items()
            }
            got: dict = {}
            t0 = time.perf_counter()
            rx = threading.Thread(target=lambda: got.update(receive_state(chans[1], tensor_meta(state))))
            rx.start()
            sent = send_state(chans[0], state)
            rx.join(120)
            seconds = time.perf_counter() - t0
            assert all(torch.equal(got[k].to(devices[0]), v) for k, v in state.items()), "received weights differ"
            lm = sum(v.numel() * v.element_size() for k, v in state.items() if k.startswith("lm."))
            parts.append(f"{preset} {str(dtype)[6:]}: {sent / 1e6:.1f} MB (LM {lm / 1e6:.1f}) in {seconds:.2f} s")
        for ch in chans:
            ch.close()
        return "; ".join(parts)

    def plan_all():
        from poserft.cluster.plan import check_plan

        names = []
        for path in sorted((ROOT / "configs").glob("*.yaml")):
            check_plan(load_config(path))
            names.append(path.stem)
        return "fits: " + ", ".join(names)

    checks.run("cuda", cuda_info)
    checks.run("setup (tiny data, ckpts)", setup)
    checks.run("learner step", learner_step)
    checks.run("hygrpo loss, valid poses", lambda: loss_check(True))
    checks.run("hygrpo loss, no valid pose", lambda: loss_check(False))
    checks.run("process group of one", process_group)
    checks.run("checkpoint round trip", checkpoint)
    checks.run("weight publish", publish)
    checks.run("weight broadcast", broadcast)
    checks.run("poserft plan, all configs", plan_all)
    print()
    print(checks.table())
    failed = [n for n, ok, _, _ in checks.rows if not ok]
    print(
        f"\n{len(checks.rows) - len(failed)}/{len(checks.rows)} passed on {device.type}"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
