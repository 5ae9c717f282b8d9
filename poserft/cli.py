"""The `poserft` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from poserft.common.config import EVAL_MAX_NEW_TOKENS

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cmd_data_build(args) -> int:
    from poserft.data.dataset import build_dataset

    card = build_dataset(
        args.out,
        seed=args.seed,
        train_poses=args.train_poses,
        val_poses=args.val_poses,
        test_poses=args.test_poses,
        image_size=args.image_size,
        smpl_dir=args.smpl_dir,
        progress=not args.quiet,
        caption_registers=args.caption_registers,
    )
    caps = card["captions"]
    print(
        f"wrote {args.out}: "
        + ", ".join(f"{s} {v['rows']} rows" for s, v in card["splits"].items())
        + f"; {caps['distinct']} distinct captions, mean {caps['mean_words']} words"
    )
    return 0


def _cmd_data_import(args) -> int:
    from poserft.data.importers.cli import run_import

    print(run_import(args))
    return 0


def _config(args):
    from poserft.common.config import load_config

    return load_config(getattr(args, "config", None), getattr(args, "set", None) or [])


def _cmd_retriever_train(args) -> int:
    from poserft.reward_service.retriever_train import train_retriever

    config = _config(args)
    cfg = config.retriever
    updates = {
        k: v
        for k, v in {
            "seed": args.seed,
            "half": args.half,
            "epochs": args.epochs,
            "text_encoder": args.text_encoder,
        }.items()
        if v is not None
    }
    settings = cfg.model_copy(update=updates)
    res = train_retriever(
        args.data or config.data.sources or config.data.dir, args.out, settings, progress=not args.quiet
    )
    last = res["history"][-1]
    print(f"saved {args.out}: val R@10 t2p {last['recall_at_10_t2p']:.1f}, mRecall {last['mrecall']:.1f}")
    return 0


def _cmd_retriever_eval(args) -> int:
    from poserft.reward_service.retriever_train import evaluate_retriever, format_metrics_table

    out = args.out or str(Path(args.ckpt) / f"eval_{args.split}.json")
    m = evaluate_retriever(args.data, args.ckpt, out, split=args.split)
    print(format_metrics_table(m))
    print(f"wrote {out}")
    return 0


def _cmd_model_init(args) -> int:
    from poserft.model.checkpoint import count_parameters, init_policy, save_policy

    policy = init_policy(
        args.preset,
        args.data,
        seed=args.seed,
        text_tower=args.text_tower,
        text_tokens=args.text_tokens,
        text_head_skip=args.text_head_skip,
    )
    save_policy(policy, args.out)
    n = count_parameters(policy)
    print(
        f"wrote {args.out}: preset {args.preset}, {n['total'] / 1e6:.2f}M parameters (LM {n['lm'] / 1e6:.2f}M), vocab "
        f"{len(policy.tokenizer)}"
    )
    return 0


def _cmd_model_import(args) -> int:
    from poserft.model.checkpoint import count_parameters
    from poserft.model.llava import import_llava

    policy = import_llava(args.llava, args.out, seed=args.seed, dtype=args.dtype)
    n = count_parameters(policy)
    v = policy.meta["vision"]
    print(
        f"wrote {args.out}: LLaVA {n['total'] / 1e6:.1f}M parameters (LM {n['lm'] / 1e6:.1f}M, CLIP + projector "
        f"{n['vision'] / 1e6:.1f}M), "
        f"vocab {len(policy.tokenizer)}, {v['out_tokens']} image tokens from CLIP layer {v['feature_layer']}"
    )
    return 0


def _cmd_sft(args) -> int:
    from poserft.learner.sft import run_sft

    cfg = _config(args)
    res = run_sft(args.init, args.data or cfg.data.sources or cfg.data.dir, args.out, cfg.sft, progress=not args.quiet)
    print(f"SFT done: {res['step']} steps in {res.get('seconds', 0):.0f} s; policy at {res.get('policy')}")
    return 0


def _descriptions_file(arg: str | None) -> str | None:
    """--descriptions: a JSONL file (checked now, before any generation), 'none', or the config default."""
    from poserft.common.config import EvalConfig
    from poserft.describe_eval import load_descriptions

    path = EvalConfig().descriptions if arg is None else None if arg.lower() == "none" else arg
    if path is not None:
        load_descriptions(path)
    return path


def _check_eval_inputs(ckpt: str, data: str, evaluator: str) -> None:
    from poserft.data.dataset import load_card
    from poserft.model.checkpoint import check_checkpoint

    check_checkpoint(ckpt)
    load_card(data)
    for name in ("retriever.json", "retriever.safetensors"):
        if not (Path(evaluator) / name).is_file():
            raise FileNotFoundError(f"--evaluator {evaluator}: {name} is missing (`poserft retriever train` makes one)")


def _cmd_eval(args) -> int:
    from poserft.evaluate import checkpoint_name, eval_table, evaluate_policy

    out = args.out or str(Path(args.ckpt) / "eval")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    descriptions = _descriptions_file(args.descriptions)
    if not args.out:
        print(f"no --out given: writing into {out}")
    _check_eval_inputs(args.ckpt, args.data, args.evaluator)  # before the model loads: one line, no progress bars
    res = evaluate_policy(
        args.ckpt,
        args.data,
        args.evaluator,
        out_dir=out,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        descriptions=descriptions,
    )
    print(eval_table({checkpoint_name(args.ckpt): res}))
    print(f"wrote {out}/eval.json, eval.md and example PNGs")
    return 0


def _cmd_train(args) -> int:
    import yaml

    from poserft.cluster.preflight import check_run

    cfg = _config(args)
    run_dir = Path(args.run_dir or cfg.run_dir)
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    check_run(cfg, args.init, run_dir)  # before Ray: a run that cannot work fails here in one line
    _plan_preflight(cfg)
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, logging_level="ERROR")
    if args.dry_run:
        from poserft.cluster.preflight import check_placement

        print(f"config, --init, data.dir and --run-dir {run_dir} are usable; the roles fit the Ray cluster:")
        for line in check_placement(cfg):
            print(f"  {line}")
        ray.shutdown()
        return 0
    from poserft.cluster.runlog import write_run_record

    write_run_record(cfg, run_dir, args.argv)
    if not args.verbose:
        from poserft.cluster.driver_logs import route_worker_logs

        log = route_worker_logs(run_dir / "logs" / "workers.log")
        print(
            f"run folder {run_dir}: config.yaml, command.txt; worker output (vLLM, torch) in {log} (--verbose shows "
            "it here)"
        )
    from poserft.cluster.controller import run_training

    res = run_training(cfg, args.init, str(run_dir))
    print(json.dumps(res))
    return 0


def _plan_preflight(cfg) -> None:
    """`poserft plan` before a run: a config whose roles cannot fit their GPUs fails in one line."""
    from poserft.cluster.plan import check_plan

    check_plan(cfg, float(os.environ.get("POSERFT_GPU_MEMORY_GB", "80")))


def _cmd_plan(args) -> int:
    from poserft.cluster.plan import check_plan, format_plan, plan

    cfg = _config(args)
    print(format_plan(plan(cfg, args.gpu_memory_gb), args.gpu_memory_gb))
    check_plan(cfg, args.gpu_memory_gb)  # the first role that cannot fit: one line, exit 2
    print("every role fits")
    return 0


def _cmd_submit(args) -> int:
    from poserft.cluster.jobs import submit

    _plan_preflight(_config(args))
    job, paths = submit(
        args.address, args.config, args.init, args.run_dir, args.set or [], working_dir=args.working_dir
    )
    for p in paths:
        if p.warning:
            print(f"poserft: warning: {p.warning}", file=sys.stderr)
    print(f"submitted {job}; follow it with: poserft logs {job} --follow --address {args.address}")
    return 0


def _cmd_status(args) -> int:
    from poserft.cluster.jobs import job_status

    for j in job_status(args.address, args.job_id):
        if args.job_id is None:
            print(f"{j['job_id']}  {j['status']}  {j['entrypoint']}")
            continue
        print(f"{j['job_id']}  {j['status']}  step {j['step'] or '-'}")
        if j["reason"]:
            print(f"reason: {j['reason']}")
        print(f"entrypoint: {j['entrypoint']}")
    return 0


def _cmd_logs(args) -> int:
    from poserft.cluster.jobs import follow_logs, job_logs

    if args.follow:
        follow_logs(args.address, args.job_id, lambda chunk: print(chunk, end="", flush=True))
    else:
        print(job_logs(args.address, args.job_id), end="")
    return 0


def _cmd_stop(args) -> int:
    from poserft.cluster.jobs import stop_job

    if stop_job(args.address, args.job_id):
        print(f"stopping {args.job_id}: it finishes its current step and checkpoints (`poserft status` shows the end)")
    else:
        print(f"{args.job_id} had already ended")
    return 0


def _cmd_scale(args) -> int:
    from poserft.cluster.jobs import scale_rollout_workers

    st = scale_rollout_workers(args.rollout_workers, args.address, args.namespace)
    if args.json:  # what `scale` through the job server reads back from the job's log
        from poserft.cluster.jobs import SCALE_PREFIX

        print(SCALE_PREFIX + json.dumps(st, default=str))
        return 0
    print(
        f"rollout workers: target {st['target_workers']}, running {st['workers']} (applied between steps); step "
        f"{st['step']}, version {st['version']}"
    )
    return 0


def _cmd_generate(args) -> int:
    from poserft.inference.generate import read_batch, read_pose_file, run_generate
    from poserft.inference.pipeline import PosePipeline, Settings, image_request, pose_request, text_request

    settings = Settings(args.samples, args.temperature, args.seed, args.max_new_tokens).check()
    if args.text is not None:
        reqs = [text_request(args.text)]
    elif args.image is not None:
        reqs = [image_request(args.image)]
    elif args.pose is not None:
        reqs = [pose_request(read_pose_file(args.pose))]
    else:
        reqs = read_batch(args.batch)
    pipe = PosePipeline.load(args.ckpt, backend=args.backend)
    try:
        run_generate(pipe, reqs, settings, args.out, progress=not args.quiet)
    finally:
        pipe.close()
    return 0


def _cmd_serve(args) -> int:
    from poserft.inference.server import run_forever, start

    url = start(
        args.ckpt,
        args.host,
        args.port,
        args.replicas,
        args.backend,
        insecure_no_auth=args.insecure_no_auth,
        max_batch_size=args.max_batch,
        batch_wait_s=args.batch_wait_ms / 1000,
        num_cpus=args.num_cpus,
    )
    run_forever(url, not args.insecure_no_auth)
    return 0


def _cmd_demo(args) -> int:
    from poserft.demo import run_demo

    return run_demo(data_dir=Path(args.data), run_dir=Path(args.run_dir), seed=args.seed)


def _add_config_args(p, example: str = "sft.steps=100") -> None:
    p.add_argument("--config", default=None, help="YAML config (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=f"dotted override of a config key, repeatable, e.g. --set {example}",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poserft", description="Pose-RFT / HyGRPO reinforcement fine-tuning on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="synthetic benchmark, and imports of real data sets").add_subparsers(
        dest="data_command", required=True
    )
    b = data.add_parser("build", help="write the synthetic benchmark as Parquet")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--train-poses", type=int, default=20000)
    b.add_argument("--val-poses", type=int, default=1000)
    b.add_argument("--test-poses", type=int, default=1000)
    b.add_argument("--image-size", type=int, default=64)
    b.add_argument("--smpl-dir", default=None, help="folder with SMPL_NEUTRAL.pkl (default: built-in skeleton)")
    b.add_argument(
        "--caption-registers",
        default="none",
        choices=["none", "basic", "rich", "everyday"],
        help="train captions in people's registers as well (data.caption_registers; configs/tiny-cpu.yaml uses rich)",
    )
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_data_build)
    from poserft.data.importers.cli import add_import_parsers

    add_import_parsers(data, _cmd_data_import)

    r = sub.add_parser("retriever", help="pose-text retriever").add_subparsers(dest="retriever_command", required=True)
    rt = r.add_parser("train", help="train a retriever (checkpoints every epoch, resumes)")
    rt.add_argument("--data", default=None, help="dataset folder (default: data.sources, else data.dir of the config)")
    rt.add_argument("--out", required=True)
    rt.add_argument("--seed", type=int, default=None)
    rt.add_argument("--half", type=int, choices=(0, 1), default=None, help="train on one half of the training poses")
    rt.add_argument("--epochs", type=int, default=None)
    rt.add_argument("--text-encoder", choices=("transformer", "transformer-wordemb", "minilm"), default=None)
    _add_config_args(rt, example="retriever.epochs=2")
    rt.set_defaults(func=_cmd_retriever_train)
    re_ = r.add_parser("eval", help="Recall@K, mRecall and R-precision on the test split")
    re_.add_argument("--data", required=True)
    re_.add_argument("--ckpt", required=True)
    re_.add_argument("--split", default="test", choices=("val", "test"))
    re_.add_argument("--out", default=None, help="JSON path (default CKPT/eval_<split>.json)")
    re_.set_defaults(func=_cmd_retriever_eval)

    m = sub.add_parser("model", help="policy checkpoints").add_subparsers(dest="model_command", required=True)
    mi = m.add_parser("init", help="build a randomly initialised policy (tokenizer trained on the data)")
    mi.add_argument("--preset", default="tiny")
    mi.add_argument("--data", required=True, help="dataset folder (the tokenizer is trained on its train split)")
    mi.add_argument("--out", required=True)
    mi.add_argument("--seed", type=int, default=0)
    mi.add_argument(
        "--text-tower",
        default="none",
        choices=["none", "minilm-wordemb"],
        help="pretrained word knowledge in prompt slots (the packaged MiniLM's frozen word embeddings; "
        "configs/tiny-cpu.yaml model.text_tower)",
    )
    mi.add_argument("--text-tokens", type=int, default=4, help="prompt slots the text tower fills")
    mi.add_argument(
        "--text-head-skip",
        action="store_true",
        help="with a text tower, the pose head also reads the text slots directly (configs: model.text_head_skip)",
    )
    mi.set_defaults(func=_cmd_model_init)
    mp = m.add_parser(
        "import",
        help="convert a Hugging Face LLaVA-1.5 checkpoint into a poserft policy (see docs/real_checkpoints.md)",
    )
    mp.add_argument(
        "--llava",
        required=True,
        metavar="PATH",
        help="folder of a LlavaForConditionalGeneration checkpoint, e.g. llava-hf/llava-1.5-7b-hf",
    )
    mp.add_argument("--out", required=True)
    mp.add_argument("--seed", type=int, default=0, help="seed of the new pose head and pose-input MLP")
    mp.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="LM weights dtype (default: as stored)",
    )
    mp.set_defaults(func=_cmd_model_import)

    sf = sub.add_parser("sft", help="supervised fine-tuning over the three tasks (resumable)")
    sf.add_argument("--init", required=True, help="checkpoint to start from (`poserft model init`)")
    sf.add_argument("--data", default=None, help="dataset folder (default: data.dir of the config)")
    sf.add_argument("--out", required=True, help="output folder: state.pt while training, policy/ at the end")
    _add_config_args(sf)
    sf.set_defaults(func=_cmd_sft)

    ev = sub.add_parser("eval", help="evaluate a policy checkpoint on the test split")
    ev.add_argument(
        "--ckpt", required=True, help="policy checkpoint folder (e.g. runs/demo/sft/policy or RUN/checkpoints/latest)"
    )
    ev.add_argument("--data", required=True, help="dataset folder (`poserft data build`); its test split is evaluated")
    ev.add_argument("--evaluator", required=True, help="the evaluator retriever (not the reward one)")
    ev.add_argument("--limit", type=int, default=None, help="only the first N rows per task")
    ev.add_argument(
        "--max-new-tokens",
        type=int,
        default=EVAL_MAX_NEW_TOKENS,
        help=f"greedy decoding budget per response (default {EVAL_MAX_NEW_TOKENS}; captions need ~150)",
    )
    ev.add_argument(
        "--out", default=None, help="output folder for eval.json, eval.md and the PNGs (default: CKPT/eval)"
    )
    ev.add_argument(
        "--descriptions",
        default=None,
        metavar="FILE.jsonl",
        help="human-written descriptions with target poses (description, pose_id, target_pose); default "
        "eval.descriptions: "
        "the repository's benchmarks/data/human_dev/descriptions.jsonl when present; 'none' skips them",
    )
    ev.set_defaults(func=_cmd_eval)

    tr = sub.add_parser("train", help="HyGRPO training on Ray (starts a local cluster or joins RAY_ADDRESS)")
    tr.add_argument("--init", required=True, help="the SFT checkpoint (also the frozen reference)")
    tr.add_argument(
        "--run-dir", default=None, help="run folder (default: run_dir of the config); resumes if it has a checkpoint"
    )
    tr.add_argument(
        "--print-config", action="store_true", help="print the resolved config (every default filled in) and exit"
    )
    tr.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config, --init, data and run folder, place the roles on Ray, exit",
    )
    tr.add_argument(
        "--verbose",
        action="store_true",
        help="show the workers' output (vLLM, torch warnings) here, not only in RUN_DIR/logs/",
    )
    _add_config_args(tr, example="rl.steps=2")
    tr.set_defaults(func=_cmd_train)

    pl = sub.add_parser(
        "plan", help="memory estimate per role against the GPUs the config asks for (refuses a config that cannot fit)"
    )
    pl.add_argument(
        "--gpu-memory-gb", type=float, default=80.0, help="memory of one GPU (default 80, an H100 / A100 80 GB)"
    )
    _add_config_args(pl)
    pl.set_defaults(func=_cmd_plan)

    su = sub.add_parser("submit", help="submit `poserft train` as a Ray job")
    su.add_argument("--address", default=None, help="the head's dashboard, http://HEAD:8265 (default: RAY_ADDRESS)")
    su.add_argument(
        "--config", required=True, help="YAML config, read here; its paths are resolved for the job (see docs)"
    )
    su.add_argument("--init", required=True, help="SFT checkpoint path as seen by the cluster")
    su.add_argument("--run-dir", default="runs/job", help="run folder as seen by the cluster (use shared storage)")
    su.add_argument("--working-dir", default=".", help="folder shipped as the job's working directory")
    su.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="dotted override of a config key, repeatable, e.g. --set rl.steps=2",
    )
    su.set_defaults(func=_cmd_submit)
    st = sub.add_parser("status", help="status of submitted jobs")
    st.add_argument(
        "job_id",
        nargs="?",
        default=None,
        help="one job: its status, current step and failure reason (default: list all)",
    )
    st.add_argument("--address", default=None, help="the head's dashboard, http://HEAD:8265 (default: RAY_ADDRESS)")
    st.set_defaults(func=_cmd_status)
    lg = sub.add_parser("logs", help="logs of a submitted job")
    lg.add_argument("job_id", help="the id `poserft submit` printed")
    lg.add_argument("--address", default=None, help="the head's dashboard, http://HEAD:8265 (default: RAY_ADDRESS)")
    lg.add_argument("--follow", "-f", action="store_true", help="stream the log until the job ends")
    lg.set_defaults(func=_cmd_logs)
    sp = sub.add_parser("stop", help="stop a submitted job after its current step (it checkpoints first)")
    sp.add_argument("job_id", help="the id `poserft submit` printed")
    sp.add_argument("--address", default=None, help="the head's dashboard, http://HEAD:8265 (default: RAY_ADDRESS)")
    sp.set_defaults(func=_cmd_stop)
    sc = sub.add_parser("scale", help="add or remove rollout workers of a running job")
    sc.add_argument("--rollout-workers", type=int, required=True, help="rollout workers wanted (at least 1)")
    sc.add_argument(
        "--address",
        default=None,
        help="the head's dashboard, http://HEAD:8265, like submit/status/logs "
        "(default: RAY_ADDRESS; a GCS address HEAD:6379 or `auto` also works inside the cluster)",
    )
    sc.add_argument("--namespace", default=None, help="Ray namespace of the controller (default: poserft)")
    sc.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    sc.set_defaults(func=_cmd_scale)

    from poserft.reward_service.grpc_server import register_cli

    register_cli(sub)
    from poserft import report

    report.register_cli(sub)

    ge = sub.add_parser("generate", help="poses (and text) from a trained checkpoint: npz, json, png and bvh files")
    ge.add_argument("--ckpt", required=True, help="policy checkpoint folder (e.g. RUN/policy)")
    src = ge.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="a description of a pose (text2pose)")
    src.add_argument("--image", metavar="PATH", help="a PNG/JPEG picture of a person (image2pose)")
    src.add_argument("--pose", metavar="FILE", help="an axis-angle pose, .npz/.npy/.json (pose2text)")
    src.add_argument(
        "--batch", metavar="JSONL", help='one input per line: {"text": ...}, {"image": PATH} or {"pose": FILE}'
    )
    ge.add_argument("--samples", type=int, default=0, help="draw N poses from the Gaussian head (default 0: its mean)")
    ge.add_argument("--temperature", type=float, default=0.0, help="text sampling temperature (default 0: greedy)")
    ge.add_argument("--seed", type=int, default=0)
    ge.add_argument("--max-new-tokens", type=int, default=64)
    ge.add_argument("--backend", choices=("auto", "hf", "vllm"), default="auto", help="auto: vLLM on a GPU, else HF")
    ge.add_argument("--out", required=True, help="output folder (one subfolder per line with --batch)")
    ge.add_argument("--quiet", action="store_true", help="no progress bar")
    ge.set_defaults(func=_cmd_generate)

    sv = sub.add_parser("serve", help="HTTP API and playground on Ray Serve (token from $POSERFT_SERVE_TOKEN)")
    sv.add_argument("--ckpt", required=True)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--replicas", type=int, default=1, help="replicas of the model (spread over the Ray cluster)")
    sv.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    sv.add_argument("--max-batch", type=int, default=16, help="inputs batched into one engine call")
    sv.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    sv.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica")
    sv.add_argument("--insecure-no-auth", action="store_true", help="serve without a token (local testing only)")
    sv.set_defaults(func=_cmd_serve)

    d = sub.add_parser("demo", help="run the end-to-end demo on the tiny default")
    d.add_argument("--data", default="data/synth")
    d.add_argument("--run-dir", default="runs/demo")
    d.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the policy init, SFT and RL (model.init_seed, sft.seed, rl.seed); data and retrievers keep "
        "theirs",
    )
    d.set_defaults(func=_cmd_demo)
    return p


def use_cluster_token() -> None:
    """`ray start` (Ray 2.60) enables token authentication, and Ray's clients send the token only
    when RAY_AUTH_MODE=token is set *before* ray is imported. Turn it on when a token is at hand
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and the user has not chosen."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear at once in logs and pipes
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line, for RUN_DIR/command.txt
    if args.func in (_cmd_submit, _cmd_status, _cmd_logs, _cmd_stop, _cmd_scale) and "ray" not in sys.modules:
        use_cluster_token()  # only for clients of a running cluster, and only before Ray is imported
    from poserft.common.config import ConfigError
    from poserft.data.dataset import DatasetError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as err:
        if os.environ.get("POSERFT_DEBUG"):
            raise
        print(f"poserft: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("poserft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
