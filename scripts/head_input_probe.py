"""Is it the pose head or what it reads? Retrain a checkpoint's head on frozen inputs (issue 14).

The text proxy (`scripts/text_understanding_proxy.py`) maps the mean MiniLM word embedding of a
caption straight to a pose and gains 7 points of dev top-1 from `data.caption_registers:
everyday`; the demo's policy trained on that data gains nothing. This probe separates the head
from its inputs. For a checkpoint it computes once, with everything frozen:
- the pose head's input (`PosePolicy.head_input`: h(<POSE>) under the row's teacher-forced
  answer plus the text skip) of every text2pose row of the train split and `--image-rows`
  image2pose rows (`sft.refit_rows`), of the dev and blind descriptions (first text2pose
  template) and of 500 val image2pose rows;
- each row's raw text-tower feature (`PosePolicy.text_features`, 384 numbers);
then trains a copy of the head (AdamW, one-cycle, lr 5e-4, batch 256; the SFT pose loss
`sft.pose_loss` with the demo's weights: rotation L1 1, 6D L1 0.5, NLL 0.05, joint term 1 on
text2pose rows) under one variant and prints dev / blind top-1 and the val image2pose
PA-MPJPE every few epochs:
- `--skip W`: a raw-feature MLP (LayerNorm, W units, GELU, zero-initialised output) added to the
  head input of every row (0: none);
- `--hidden zero`: text rows' head input without the LM's hidden state (the skip alone; needs
  `--skip`);
- `--text-rot X`: weight of the rotation terms (L1 on rotation matrices and on 6D) on text2pose
  rows; image2pose rows keep theirs.
The inputs are cached in `--cache` (delete it for another checkpoint).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/head_input_probe.py --ckpt runs/demo/sft/policy
        [--data data/synth] [--epochs 24] [--skip 512] [--hidden keep|zero] [--text-rot 1.0]
        [--cache runs/head_probe/cache.pt] [--out runs/head_probe/result.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]


def description_table(path, body) -> tuple[pa.Table, object]:
    """A descriptions file as text2pose rows (first template, the fixed answer)."""
    from poserft.common.schemas import POSE_RESPONSE
    from poserft.data.dataset import PROMPTS
    from poserft.describe_eval import load_descriptions

    ds = load_descriptions(path)
    poses = ds.poses_aa[ds.target_index]
    joints = body.joints_from_axis_angle(poses)
    table = pa.table(
        {
            "task": ["text2pose"] * len(ds.descriptions),
            "prompt": [PROMPTS["text2pose"][0].format(caption=d) for d in ds.descriptions],
            "reference_text": [POSE_RESPONSE] * len(ds.descriptions),
            "target_pose": [p.reshape(-1).tolist() for p in poses],
            "target_joints": [j.reshape(-1).tolist() for j in joints],
            "image": pa.nulls(len(ds.descriptions), pa.binary()),
        }
    )
    return table, ds


def compute_cache(ckpt: str, data: str, image_rows: int) -> dict:
    from poserft.common.body import BodyModel
    from poserft.data.dataset import load_split
    from poserft.describe_eval import BLIND_SET, DEV_SET
    from poserft.learner.sft import head_inputs, make_examples, refit_rows
    from poserft.model.checkpoint import load_policy

    body = BodyModel()
    policy = load_policy(ckpt).eval()
    train = load_split(data, "train")
    ex = make_examples(policy, train.filter(pa.compute.is_in(train["task"], pa.array(["text2pose", "image2pose"]))))
    rows = refit_rows(ex, image_rows, 0)
    t0 = time.time()
    cache = {
        "x": head_inputs(policy, ex, rows),
        "raw": policy.text_features([ex.prompt_ids[int(i)] for i in rows]),
        "target_6d": ex.target_6d[rows],
        "target_joints": ex.target_joints[rows],
        "is_text": torch.tensor([ex.tasks[int(i)] == "text2pose" for i in rows]),
        "sets": {},
    }
    for name, path in (("dev", DEV_SET), ("blind", BLIND_SET)):
        table, ds = description_table(path, body)
        dex = make_examples(policy, table)
        all_rows = np.arange(len(dex))
        cache["sets"][name] = {
            "x": head_inputs(policy, dex, all_rows, progress=False),
            "raw": policy.text_features(dex.prompt_ids),
            "poses_aa": torch.from_numpy(ds.poses_aa),
            "target_index": torch.from_numpy(ds.target_index),
        }
    val = load_split(data, "val")
    vex = make_examples(policy, val.filter(pa.compute.equal(val["task"], "image2pose")))
    vrows = np.arange(min(500, len(vex)))
    cache["val"] = {
        "x": head_inputs(policy, vex, vrows, progress=False),
        "joints": vex.target_joints[vrows].double(),
    }
    cache["head"] = copy.deepcopy(policy.head)
    cache["seconds"] = round(time.time() - t0, 1)
    return cache


class Probe(torch.nn.Module):
    def __init__(self, head, width: int, hidden: int, zero_text_hidden: bool):
        super().__init__()
        self.head = head
        self.zero_text_hidden = zero_text_hidden
        self.skip = None
        if width:
            from poserft.model.policy import words_mlp  # the architecture of the head's word path

            self.skip = words_mlp(width, hidden)
            torch.nn.init.zeros_(self.skip[3].weight)
            torch.nn.init.zeros_(self.skip[3].bias)

    def forward(self, x, raw, is_text):
        if self.zero_text_hidden:
            x = x * (~is_text).float()[:, None]
        if self.skip is not None:
            x = x + self.skip(raw)
        return self.head(x)


def evaluate(probe, cache, body) -> dict:
    from poserft.common.metrics import pa_mpjpe
    from poserft.common.rotations import axis_angle_to_rot6d
    from poserft.describe_eval import describe_metrics

    probe.eval()
    out = {}
    with torch.no_grad():
        for name, s in cache["sets"].items():
            n = len(s["x"])
            mu, _ = probe(s["x"], s["raw"], torch.ones(n, dtype=torch.bool))
            p6 = axis_angle_to_rot6d(s["poses_aa"].float()).reshape(len(s["poses_aa"]), -1)
            poses_m = body.forward_kinematics(p6.double())
            mean_m = body.forward_kinematics(p6.reshape(-1, 24, 6).mean(0).reshape(1, -1).double())[0]
            res = describe_metrics(body.forward_kinematics(mu.double()), poses_m, s["target_index"], mean_m)
            out[name] = {"top1": round(res["top1"], 1), "top3": round(res["top3"], 1)}
        v = cache["val"]
        mu, _ = probe(v["x"], torch.zeros(len(v["x"]), 384), torch.zeros(len(v["x"]), dtype=torch.bool))
        out["val_image2pose_pa_mpjpe_mm"] = round(
            float(pa_mpjpe(body.forward_kinematics(mu.double()), v["joints"]).mean()), 1
        )
    probe.train()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", default="data/synth")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--skip", type=int, default=0, help="width of the raw-feature skip MLP (0: none)")
    ap.add_argument("--hidden", choices=("keep", "zero"), default="keep")
    ap.add_argument("--text-rot", type=float, default=1.0, help="rotation-loss weight on text2pose rows")
    ap.add_argument("--image-rows", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(ROOT / "runs" / "head_probe" / "cache.pt"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "head_probe" / "result.json"))
    args = ap.parse_args()
    if args.hidden == "zero" and not args.skip:
        raise SystemExit("--hidden zero needs --skip W: without the hidden state the head reads only the skip")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from poserft.common.body import BodyModel
    from poserft.learner.sft import pose_loss

    body = BodyModel()
    cache_path = Path(args.cache)
    if cache_path.is_file():
        cache = torch.load(cache_path, weights_only=False)
        if cache.get("ckpt") != str(Path(args.ckpt).resolve()):
            raise SystemExit(f"{cache_path} holds the inputs of {cache.get('ckpt')}; delete it or pass another --cache")
    else:
        cache = compute_cache(args.ckpt, args.data, args.image_rows)
        cache["ckpt"] = str(Path(args.ckpt).resolve())
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cache, cache_path)
        print(f"cached the head inputs of {len(cache['x'])} rows in {cache['seconds']} s", flush=True)
    torch.manual_seed(args.seed)
    x, raw, is_text = cache["x"], cache["raw"], cache["is_text"]
    t6, tj = cache["target_6d"], cache["target_joints"]
    probe = Probe(copy.deepcopy(cache["head"]), args.skip, x.shape[1], args.hidden == "zero")
    history = [{"epoch": 0, **evaluate(probe, cache, body)}]
    print(history[-1], flush=True)
    opt = torch.optim.AdamW(probe.parameters(), lr=5e-4, weight_decay=0.01)
    per_epoch = len(x) // 256
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-4, total_steps=args.epochs * per_epoch, pct_start=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        for idx in torch.randperm(len(x), generator=gen)[: per_epoch * 256].split(256):
            mu, log_std = probe(x[idx], raw[idx], is_text[idx])
            text = is_text[idx]
            loss = 0.0
            for rows, rot in ((text, args.text_rot), (~text, 1.0)):  # each part's mean, weighted by its share
                if rows.any():
                    part, _ = pose_loss(
                        mu[rows], log_std[rows], t6[idx][rows], tj[idx][rows], text[rows], (rot, 0.05, 1.0, 0.5 * rot)
                    )
                    loss = loss + part * rows.float().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % max(1, args.epochs // 6) == 0 or epoch + 1 == args.epochs:
            history.append({"epoch": epoch + 1, "seconds": round(time.time() - t0), **evaluate(probe, cache, body)})
            print(history[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "history": history}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
