"""`rl.rollout.weight_sync: broadcast`: learner rank 0 sends each rollout worker the new weights
over a process group of its own (gloo here; NCCL on GPUs, where the vLLM engine joins through
vLLM's weight-transfer API). In-process halves on two threads, then a whole run through Ray."""

import json
import threading
import time

import pytest
import ray
import torch

from poserft.common.config import ConfigError, ModelConfig, RLConfig, load_config
from poserft.common.weight_channel import WeightChannel, endpoint, receive_state, send_state, tensor_meta
from poserft.learner.learner import LearnerCore
from poserft.model import lora
from poserft.rollout_workers.worker import RolloutWorkerCore


def _both(*calls):
    """Run the two halves of a channel call at once (each blocks until the other joins)."""
    out, errors = [None] * len(calls), []

    def run(i, fn):
        try:
            out[i] = fn()
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return out


def _catch(errors: list, fn) -> None:
    try:
        fn()
    except Exception as err:  # the test reads it
        errors.append(err)


def test_channel_sends_every_tensor_in_its_dtype():
    ep = endpoint()
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.bfloat16) * 3, "n": torch.tensor(7)}
    sender, receiver = _both(
        lambda: WeightChannel.open(ep["master_address"], ep["master_port"], 0, 2, torch.device("cpu")),
        lambda: WeightChannel.open(ep["master_address"], ep["master_port"], 1, 2, torch.device("cpu")),
    )
    sent, got = _both(lambda: send_state(sender, state), lambda: receive_state(receiver, tensor_meta(state)))
    assert sent == 6 * 4 + 4 * 2 + 8
    assert list(got) == list(state)
    for k in state:
        assert got[k].dtype == state[k].dtype and torch.equal(got[k], state[k])
    with pytest.raises(ValueError, match="world_size >= 2"):
        WeightChannel.open("127.0.0.1", 1, 0, 1, torch.device("cpu"))


def _learner(ckpt, model: ModelConfig) -> LearnerCore:
    settings = RLConfig(rollout={"engine": "hf", "weight_sync": "broadcast"}, beta=0.0, beta_c=0.0)
    return LearnerCore(str(ckpt), settings, threads=1, model=model)


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_a_worker_ends_with_the_learners_weights(tiny_ckpt, use_lora):
    model = ModelConfig(lora={"enabled": True, "r": 4, "alpha": 8} if use_lora else {"enabled": False})
    learner = _learner(tiny_ckpt, model)
    with torch.no_grad():  # weights the worker's checkpoint does not have
        for name, p in learner.policy.named_parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    learner.version = 3
    version, meta = learner.publish()
    worker = RolloutWorkerCore(str(tiny_ckpt), engine="hf", threads=1)
    ep_copy = learner.new_weight_endpoint()
    _both(lambda: learner.open_weight_channel("rollout-0", ep_copy), lambda: worker.join_weight_channel(ep_copy))
    sent, got = _both(lambda: learner.send_weights("rollout-0"), lambda: worker.receive_weights(version, meta))
    assert sent == got == 3 and worker.version == 3

    expect = learner.policy.state_dict()
    if use_lora:
        expect = {k: v for k, v in expect.items() if not k.startswith("lm.")}
        expect |= {f"lm.{k}": v for k, v in lora.plain_state(learner.policy.lm).items()}
    own = worker.policy.state_dict()
    assert set(own) == set(expect)
    for k, v in expect.items():
        assert torch.equal(own[k], v.to(own[k].dtype)), k
    # The HF engine shares the worker's policy copy: generation uses the new weights.
    name = next(n for n, _ in worker.policy.lm.named_parameters())
    assert worker.weight_checksum(name) == pytest.approx(float(expect[f"lm.{name}"].sum()), rel=1e-6)
    assert learner.published_bytes == sum(v.numel() * v.element_size() for v in expect.values())

    # The version travels with the weights: a receiver told another one refuses them (whole message read).
    learner.version = 4
    assert learner.latest_weights()[0] == 4
    errors = []
    recv = threading.Thread(target=lambda: _catch(errors, lambda: worker.receive_weights(3, meta)))
    recv.start()
    assert learner.send_weights("rollout-0") == 4
    recv.join(timeout=60)
    assert len(errors) == 1 and "got weights of version 4, expected 3" in str(errors[0])
    assert worker.version == 3

    with pytest.raises(ValueError, match="no weight channel to rollout-9"):
        learner.send_weights("rollout-9")
    learner.close_weight_channel("rollout-0")


def test_broadcast_sync_needs_gpus_for_a_vllm_engine():
    with pytest.raises(ConfigError, match=r"'rl.rollout.weight_sync' .* needs GPUs \(num_gpus > 0\)"):
        load_config(None, ["rl.rollout.weight_sync=broadcast"])  # engine vllm on CPU


def test_a_run_syncs_by_broadcast_while_scaling(ray_local, tiny_data, tiny_sft, tmp_path):
    from poserft.cluster.controller import Controller

    steps, prompts = 6, 4
    cfg = load_config(
        None,
        [
            f"data.dir={tiny_data}",
            f"rl.steps={steps}",
            f"rl.prompts_per_step={prompts}",
            "rl.group_size=2",
            "rl.tasks=[image2pose]",
            "rl.max_staleness=1",
            "rl.sampling.max_tokens=16",
            "rl.rollout.engine=hf",
            "rl.rollout.weight_sync=broadcast",
            "rl.rollout.num_workers=2",
            "rl.rollout.num_cpus=0.5",
            "rl.learner.num_cpus=0.5",
            "rl.reward.num_cpus=0.5",
            "rewards.num_workers=1",
            "eval.descriptions=none",
        ],
    )
    run_dir = tmp_path / "run"
    ctl = Controller(cfg, str(tiny_sft), str(run_dir))

    def grow_then_shrink():  # a worker added mid-run joins by its own channel; a removed one closes it
        while ctl.step < 2:
            time.sleep(0.2)
        ctl.scale(3)
        while ctl.step < 4:
            time.sleep(0.2)
        ctl.scale(2)

    scaler = threading.Thread(target=grow_then_shrink, daemon=True)
    scaler.start()
    result = ctl.run()
    scaler.join(timeout=5)
    assert result["steps"] == steps and result["version"] == steps
    metrics = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(m["workers"] for m in metrics) == 3 and len(ctl.workers) == 2
    versions = ray.get([w.actor.get_version.remote() for w in ctl.workers])
    assert min(versions) >= steps - 1 and max(versions) == steps  # busy workers catch up before their next batch
    ledger = [json.loads(ln) for ln in (run_dir / "ledger.jsonl").read_text().splitlines()]
    ids = [t for e in ledger for t in e["task_ids"]]
    assert len(ids) == steps * prompts and len(set(ids)) == len(ids)
    idle = [w for w in ctl.workers if ray.get(w.actor.get_version.remote()) == steps]
    name = "model.embed_tokens.weight"
    want = ray.get(ctl.learner.weight_state.remote())[f"lm.{name}"].sum()
    assert ray.get(idle[0].actor.weight_checksum.remote(name)) == pytest.approx(float(want), rel=1e-5)
    ctl.shutdown()
