"""`make demo` / `poserft demo`: the whole pipeline on the tiny CPU default.

Stages (each is skipped when its output already exists, so an interrupted demo resumes):
  1. data       synthetic benchmark            -> data/synth
  2. retrievers reward (seed 1, half 0) and evaluator (seed 2, half 1) -> runs/demo/retriever_*
  3. model      tiny policy, tokenizer trained on the data             -> runs/demo/init
  4. sft        supervised fine-tuning                                  -> runs/demo/sft/policy
  5. hygrpo     HyGRPO on Ray with vLLM rollout workers (when available)
  6. eval       every trained checkpoint on the test split, with the evaluator retriever
Writes runs/demo/summary.json and summary.md, plus samples.png of the data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from poserft.common.config import load_config

STAGES = ("data", "retrievers", "model", "sft", "hygrpo", "grpo", "eval")


def _stage(name: str, i: int) -> float:
    print(f"\n=== [{i}/{len(STAGES)}] {name} ===", flush=True)
    return time.time()


def _done(name: str, t0: float, timings: dict) -> None:
    timings[name] = round(time.time() - t0, 1)
    print(f"--- {name} done in {timings[name]:.0f} s", flush=True)


def sample_sheet(data_dir: Path, out_png: Path, n: int = 6) -> list[str]:
    """Render a few test poses with their captions; returns the captions."""
    import numpy as np

    from poserft.data.dataset import load_split
    from poserft.data.render import render_grid

    table = load_split(data_dir, "test", task="text2pose").slice(0, n)
    joints = np.array(table["target_joints"].combine_chunks().flatten(), dtype=np.float64).reshape(-1, 24, 3)
    captions = table["caption"].to_pylist()
    render_grid(list(joints), captions=captions, size=256).save(out_png)
    return captions


def _rl_finished(rl_dir: Path, steps: int) -> bool:
    meta = rl_dir / "checkpoints" / "latest" / "poserft.json"
    return meta.is_file() and json.loads(meta.read_text()).get("controller", {}).get("step", 0) >= steps


SEED_KEYS = ("model.init_seed", "sft.seed", "rl.seed")  # what `--seed` sets; data and retrievers keep theirs


def check_init_matches(init: Path, model_cfg, run_dir: Path) -> None:
    """Refuse a reused `init` checkpoint whose text tower differs from the config's."""
    tower = json.loads((init / "poserft.json").read_text()).get("text_tower", {})
    saved = (tower.get("type", "none"), bool(tower.get("head_skip", False)))
    asked = (model_cfg.text_tower, model_cfg.head_skip)
    if saved != asked:
        raise ValueError(
            f"{init} has text tower {saved[0]} (head skip {saved[1]}), but the config asks for {asked[0]} (head "
            f"skip {asked[1]}); delete {run_dir} to start again"
        )


def run_demo(
    data_dir: Path, run_dir: Path, seed: int | None = None, config: str | None = "configs/tiny-cpu.yaml", overrides=None
) -> int:
    """The pipeline of the module docstring; `seed` (None: the config's) seeds the policy's init,
    SFT and RL, as `benchmarks/bench_ablation.py` does for each of its seeds."""
    seeded = [f"{k}={seed}" for k in SEED_KEYS] if seed is not None else []
    cfg = load_config(config if config and Path(config).is_file() else None, [*seeded, *(overrides or [])])
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    summary: dict = {"config": cfg.model_dump(), "timings_s": timings}

    t0 = _stage("data", 1)
    if not (data_dir / "dataset_card.json").is_file():
        from poserft.data.dataset import build_dataset

        d = cfg.data
        build_dataset(
            data_dir,
            seed=d.seed,
            train_poses=d.train_poses,
            val_poses=d.val_poses,
            test_poses=d.test_poses,
            image_size=d.image_size,
            caption_registers=d.caption_registers,
        )
    else:
        print(f"using existing {data_dir} (delete it to rebuild)")
    from poserft.data.dataset import load_card

    card = load_card(data_dir)  # a corrupt card is a one-line DatasetError, not a JSON traceback
    built = card.get("generator", {}).get("caption_registers", "none")
    if built != cfg.data.caption_registers:
        raise ValueError(
            f"{data_dir} was built with caption_registers {built}, but the config asks for "
            f"{cfg.data.caption_registers}; delete {data_dir} (and {run_dir}) to rebuild, or pass another --data"
        )
    captions = sample_sheet(data_dir, run_dir / "samples.png")
    for c in captions[:3]:
        print(f"  caption: {c}")
    print(f"  sample poses with captions: {run_dir / 'samples.png'}")
    summary["data"] = {
        "dir": str(data_dir),
        "captions": card["captions"],
        "splits": {k: v["rows"] for k, v in card["splits"].items()},
    }
    _done("data", t0, timings)

    t0 = _stage("retrievers", 2)
    from poserft.reward_service.retriever_train import evaluate_retriever, format_metrics_table, train_retriever

    retrievers = {"reward": (1, 0), "evaluator": (2, 1)}
    summary["retrievers"] = {}
    for role, (rseed, half) in retrievers.items():
        out = run_dir / f"retriever_{role}"
        if not (out / "retriever.safetensors").is_file():
            print(f"training the {role} retriever (seed {rseed}, half {half})")
            train_retriever(data_dir, out, cfg.retriever.model_copy(update={"seed": rseed, "half": half}))
        m = evaluate_retriever(data_dir, out, out / "eval_test.json")
        print(f"{role} retriever on the test split:\n{format_metrics_table(m)}")
        summary["retrievers"][role] = {
            k: m[k] for k in ("recall_at_1_t2p", "recall_at_5_t2p", "recall_at_10_t2p", "mrecall", "r_precision_t2p")
        }
    _done("retrievers", t0, timings)

    t0 = _stage("model", 3)
    init = run_dir / "init"
    if not (init / "poserft.json").is_file():
        from poserft.model.checkpoint import count_parameters, init_policy, save_policy

        m = cfg.model
        policy = init_policy(
            m.preset,
            data_dir,
            seed=m.init_seed,
            text_tower=m.text_tower,
            text_tokens=m.text_tokens,
            text_head_skip=m.head_skip,
        )
        save_policy(policy, init)
        print(f"tiny policy: {count_parameters(policy)}")
    check_init_matches(init, cfg.model, run_dir)
    _done("model", t0, timings)

    t0 = _stage("sft", 4)
    sft_policy = run_dir / "sft" / "policy"
    if not (sft_policy / "poserft.json").is_file():
        from poserft.learner.sft import run_sft

        res = run_sft(init, data_dir, run_dir / "sft", cfg.sft)
        summary["sft_train"] = {"seconds": res["seconds"], "steps": res["step"]}
    _done("sft", t0, timings)

    checkpoints = {"sft": sft_policy}
    import ray

    from poserft.cluster.controller import run_training

    for name, i in (("hygrpo", 5), ("grpo", 6)):
        t0 = _stage(name, i)
        rl_dir = run_dir / name
        rl_cfg = cfg.model_copy(deep=True)
        rl_cfg.rewards.retriever_dir = str(run_dir / "retriever_reward")
        rl_cfg.data.dir = str(data_dir)
        rl_cfg.rl.algorithm = name
        if not ray.is_initialized():
            ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=True)
        if _rl_finished(rl_dir, rl_cfg.rl.steps):
            print(f"using the finished run in {rl_dir} (delete it to train again)")
        else:
            from poserft.cluster.driver_logs import route_worker_logs
            from poserft.cluster.runlog import write_run_record

            write_run_record(rl_cfg, rl_dir, ["demo"])  # config.yaml: the report reads the loss weights from it
            print(f"  worker output (vLLM, torch): {route_worker_logs(rl_dir / 'logs' / 'workers.log')}")
            summary[f"{name}_train"] = run_training(rl_cfg, str(sft_policy), str(rl_dir))
        checkpoints[name] = rl_dir / "checkpoints" / "latest"
        _done(name, t0, timings)
    if ray.is_initialized():
        ray.shutdown()

    t0 = _stage("eval", 7)
    from poserft.evaluate import eval_table, evaluate_policy

    results = {}
    for name, ckpt in checkpoints.items():
        results[name] = evaluate_policy(
            ckpt,
            data_dir,
            run_dir / "retriever_evaluator",
            out_dir=run_dir / "eval" / name,
            limit=cfg.eval.limit,
            max_new_tokens=cfg.eval.max_new_tokens,
            descriptions=cfg.eval.descriptions,
        )
        summary[name] = results[name]
    table = eval_table(results)
    print(table)
    _done("eval", t0, timings)

    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (run_dir / "summary.md").write_text(f"# poserft demo\n\n{table}\n\nStage times (s): {json.dumps(timings)}\n")
    print(f"\nwrote {run_dir / 'summary.json'} and {run_dir / 'summary.md'}")
    from poserft.report import write_folder_report

    print(f"wrote {write_folder_report(run_dir)} (plots of both RL runs; `poserft report {run_dir}` rewrites it)")
    return 0
