"""HyGRPO on a small pool of image2pose training prompts, in one process, without Ray actors.

The HF rollout worker, the reward scorer and the learner are called directly, 8 prompts per step,
cycling through `--pool` prompts. It prints the mean pose's MPJPE / PA-MPJPE on the step's own
prompts and, at the start and end, on `--test` held-out prompts. It shows whether the learner
improves the poses it trains on (pool 8) and whether that carries over (pool 64, test).

    python scripts/rl_fixed_prompts.py --ckpt runs/demo/sft/policy --data data/synth \
        --retriever runs/demo/retriever_reward --pool 8 --steps 30 \
        --set model.train.lm=0 --set model.train.vision=0 --set model.train.projector=0 --set model.train.pose_in=0
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
JOIN = ("task", "caption", "reference_text", "target_joints", "image", "target_pose")


def main() -> None:
    import pyarrow as pa
    import ray

    from poserft.common.body import BodyModel
    from poserft.common.config import load_config
    from poserft.common.metrics import mpjpe, pa_mpjpe
    from poserft.data.dataset import load_split
    from poserft.evaluate import _task_outputs
    from poserft.learner.learner import LearnerCore
    from poserft.reward_service.rewards import RewardScorer, RewardSettings
    from poserft.rollout_workers.worker import RolloutWorkerCore

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--retriever", default=None, help="reward retriever (only needed for text2pose)")
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (rl.*, model.*)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")  # the learner publishes with ray.put

    cfg = load_config(None, args.set)
    pool = load_split(args.data, "train", task="image2pose").slice(0, args.pool)
    test = load_split(args.data, "test", task="image2pose").slice(0, args.test)
    rows = {r["id"]: r for r in pool.to_pylist()}
    learner = LearnerCore(args.ckpt, cfg.rl, threads=2, model=cfg.model)
    worker = RolloutWorkerCore(args.ckpt, engine="hf", sampling={**cfg.rl.sampling.model_dump(), "seed": 0}, threads=2)
    scorer = RewardScorer(RewardSettings(retriever_dir=args.retriever))
    body = BodyModel()

    def errors(table) -> tuple[float, float]:
        target = torch.from_numpy(
            np.array(table["target_joints"].combine_chunks().flatten(), dtype=np.float64).reshape(-1, 24, 3)
        )
        learner.policy.eval()
        with torch.no_grad():
            joints = body.forward_kinematics(_task_outputs(learner.policy, table, 16)["mu"].double())
        learner.policy.train()
        return round(float(mpjpe(joints, target).mean()), 1), round(float(pa_mpjpe(joints, target).mean()), 1)

    print(f"start: test MPJPE / PA-MPJPE {errors(test)}", flush=True)
    for step in range(1, args.steps + 1):
        batch = pool.slice(((step - 1) * 8) % pool.num_rows, 8)
        roll = worker.generate(batch, cfg.rl.group_size, seed=step)
        ids = roll["task_id"].to_pylist()
        for col in JOIN:
            roll = roll.append_column(col, pa.array([rows[i][col] for i in ids]))
        scored = scorer.score(roll)
        metrics = learner.train_step(scored)
        version, ref = learner.latest_weights()
        worker.update_weights(version, ray.get(ref))
        if step % args.every == 0:
            joint = float(np.nanmean(scored["reward_joint"].to_numpy(zero_copy_only=False)))
            print(
                f"step {step}: sample joint reward {joint:.3f}, this batch's MPJPE / PA-MPJPE {errors(batch)}, "
                f"pose KL {metrics.get('kl_pose', float('nan')):.3f}",
                flush=True,
            )
    print(f"end: test MPJPE / PA-MPJPE {errors(test)}", flush=True)


if __name__ == "__main__":
    main()
