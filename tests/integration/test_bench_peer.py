"""benchmarks/bench_peer.py builds one GRPO setting for both systems: the same G, prompts per
optimizer step, completion length and sampling on TRL's side as in poserft's config, the prompts
poserft's controller draws, and prompt text that TRL tokenises to poserft's own prompt ids."""

from pathlib import Path

import pytest

from benchmarks.bench_peer import TASK, poserft_config, step_prompts, trl_args, trl_prompt_text

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "tiny-cpu.yaml")


@pytest.fixture(scope="module")
def cfg(tiny_data, tmp_path_factory):
    over = [
        f"data.dir={tiny_data}",
        "rl.prompts_per_step=3",
        "rl.group_size=4",
        "rl.sampling.max_tokens=12",
        "rl.micro_batch_size=6",
    ]
    return poserft_config(CONFIG, 3, "hf", tmp_path_factory.mktemp("peer_run"), over)


def test_poserft_side_is_text_only_grpo_with_the_format_reward(cfg):
    s = cfg.rl
    assert (s.algorithm, s.tasks, s.steps, s.updates_per_batch, s.max_staleness) == ("grpo", [TASK], 3, 1, 0)
    assert (s.beta, s.beta_c, s.rollout.num_workers, s.rollout.engine) == (0.0, 0.0, 1, "hf")
    assert cfg.rewards.weights == {TASK: {"format": 1.0}}
    assert (s.prompts_per_step, s.group_size, s.sampling.max_tokens, s.sampling.temperature) == (3, 4, 12, 1.0)
    assert s.sampling.pose_samples == 1  # one row per completion, as TRL has


def test_trl_side_matches_group_size_batch_and_sampling(cfg, tmp_path):
    args = trl_args(cfg, tmp_path)
    s = cfg.rl
    assert args["num_generations"] == s.group_size
    assert args["max_completion_length"] == s.sampling.max_tokens
    assert (args["temperature"], args["top_p"], args["max_steps"], args["learning_rate"]) == (1.0, 1.0, 3, s.lr)
    assert (args["beta"], args["num_iterations"], args["shuffle_dataset"], args["use_vllm"]) == (0.0, 1, False, False)
    # one optimizer step (and one generation) per P*G samples, in micro-batches of rl.micro_batch_size
    assert args["per_device_train_batch_size"] == 6
    assert (
        args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == s.prompts_per_step * s.group_size
    )
    assert args["steps_per_generation"] == args["gradient_accumulation_steps"]
    trl = pytest.importorskip("trl")  # the optional `peer` extra
    conf = trl.GRPOConfig(**args)
    assert conf.generation_batch_size == s.prompts_per_step * s.group_size


def test_prompts_are_the_controllers_and_tokenise_like_poserft(cfg, tiny_ckpt):
    from transformers import AutoTokenizer

    from poserft.data.dataset import load_split
    from poserft.model.checkpoint import load_policy

    steps = step_prompts(cfg)
    ids = [tid for step in steps for tid, _ in step]
    assert [len(step) for step in steps] == [3, 3, 3] and len(set(ids)) == 9
    task_of = dict(zip(*load_split(cfg.data.dir, "train").select(["id", "task"]).to_pydict().values()))
    assert {task_of[tid] for tid in ids} == {TASK}
    policy = load_policy(tiny_ckpt)
    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    for step in steps:
        for _, prompt in step:
            text = trl_prompt_text(tok, prompt, policy.image_tokens)
            assert tok(text)["input_ids"] == policy.encode_prompt(prompt)
