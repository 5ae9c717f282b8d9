"""Hugging Face generation for the policy (the reference backend, and evaluation).

Prompts enter as embeddings (so image and pose inputs work), left-padded; `generate` returns
the new token ids, their log-probs under the sampling distribution, and the decoded text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poserft.model.policy import PosePolicy


@dataclass
class Generated:
    token_ids: list[list[int]]
    logprobs: list[list[float]]
    texts: list[str]


def prompt_embeddings(policy: PosePolicy, prompt_ids, images=None, pose_inputs=None) -> list[torch.Tensor]:
    """Per-row (L_i, h) prompt embeddings (image and input-pose slots filled)."""
    inp = policy.build_inputs(prompt_ids, [[] for _ in prompt_ids], images, pose_inputs)
    emb = policy.embed(inp)
    return [emb[i, :n] for i, n in enumerate(inp.attention_mask.sum(1).tolist())]


def _left_pad(policy: PosePolicy, embeds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    length, h = max(e.shape[0] for e in embeds), embeds[0].shape[1]
    pad = policy.lm.get_input_embeddings().weight[policy.pad_token_id].detach()
    out = pad.expand(len(embeds), length, h).clone()
    mask = torch.zeros(len(embeds), length, dtype=torch.long, device=out.device)  # beside the embeddings (GPU)
    for i, e in enumerate(embeds):
        out[i, length - e.shape[0] :] = e
        mask[i, length - e.shape[0] :] = 1
    return out, mask


@torch.no_grad()
def generate_from_embeds(
    policy: PosePolicy,
    embeds: list[torch.Tensor],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    batch_size: int = 64,
) -> Generated:
    """Greedy when temperature == 0, else sampling; stops at EOS (kept in token_ids).

    Log-probs are under the distribution actually sampled from (temperature and top-p applied).
    """
    policy.eval()
    if seed is not None:
        torch.manual_seed(seed)
    ids_out, lp_out = [], []
    sample = temperature > 0
    for s in range(0, len(embeds), batch_size):
        emb, mask = _left_pad(policy, embeds[s : s + batch_size])
        res = policy.lm.generate(
            inputs_embeds=emb,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=top_p if sample else None,
            top_k=0 if sample else None,
            eos_token_id=policy.eos_token_id,
            pad_token_id=policy.pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
        seqs = res.sequences  # (B, T): only the new tokens when generating from embeddings
        scores = torch.stack(res.scores, 1).float()
        logp = torch.log_softmax(scores, -1).gather(-1, seqs[:, : scores.shape[1]].unsqueeze(-1)).squeeze(-1)
        for i in range(seqs.shape[0]):
            toks = seqs[i].tolist()
            if policy.eos_token_id in toks:
                toks = toks[: toks.index(policy.eos_token_id) + 1]
            ids_out.append(toks)
            lp_out.append(logp[i, : len(toks)].tolist())
    texts = [decode_response(policy, ids) for ids in ids_out]
    return Generated(ids_out, lp_out, texts)


def decode_response(policy: PosePolicy, ids: list[int]) -> str:
    return policy.tokenizer.decode(
        [t for t in ids if t not in (policy.eos_token_id, policy.pad_token_id)], skip_special_tokens=False
    ).strip()


@torch.no_grad()
def generate(
    policy: PosePolicy,
    prompt_ids: list[list[int]],
    images=None,
    pose_inputs=None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    batch_size: int = 64,
) -> Generated:
    """Token-id prompts (+ images / input poses) -> completions; see `generate_from_embeds`."""
    n = len(prompt_ids)
    images = images or [None] * n
    pose_inputs = pose_inputs if pose_inputs is not None else [None] * n
    embeds = []
    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        embeds += prompt_embeddings(policy, prompt_ids[sl], images[sl], pose_inputs[sl])
    return generate_from_embeds(policy, embeds, max_new_tokens, temperature, top_p, seed, batch_size)


@torch.no_grad()
def pose_from_response(
    policy: PosePolicy, prompt_ids, response_ids, images=None, pose_inputs=None, batch_size: int = 64
):
    """Prefill prompt + response; mu, log_std (N, 144) at the first response <POSE>, and has_pose.

    `PosePolicy.forward`'s pose outputs without its token log-probs: only the last hidden state is
    read, so the LM head runs on one position per row (`logits_to_keep=1`) instead of all of them,
    and there is no log-softmax over the vocabulary (benchmarks/profile_roles.py: this prefill is
    ~40 % of a rollout worker's step on the tiny preset)."""
    policy.eval()
    mus, stds, has = [], [], []
    n = len(prompt_ids)
    images = images or [None] * n
    pose_inputs = pose_inputs if pose_inputs is not None else [None] * n
    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        inp = policy.build_inputs(prompt_ids[sl], response_ids[sl], images[sl], pose_inputs[sl])
        out = policy.lm(
            inputs_embeds=policy.embed(inp),
            attention_mask=inp.attention_mask,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,
        )
        hidden = out.hidden_states[-1]
        pose_pos, has_pose = policy.pose_positions(inp)
        mu, log_std = policy.pose_params(hidden[torch.arange(hidden.shape[0], device=hidden.device), pose_pos], inp)
        mus.append(mu)
        stds.append(log_std)
        has.append(has_pose)
    return torch.cat(mus), torch.cat(stds), torch.cat(has)
