"""The rollout worker's pose prefill (`pose_from_response`) skips the LM head over every position
but must give exactly what the policy's full forward gives at the first response <POSE>."""

import torch

from poserft.model.checkpoint import load_policy
from poserft.model.generation import pose_from_response


def test_pose_prefill_equals_the_full_forward(tiny_ckpt):
    policy = load_policy(tiny_ckpt).eval()
    pose = policy.pose_token_id
    prompts = [policy.encode_prompt(p) for p in ("a person squatting", "someone waves with the left hand")]
    plain = [t for t in range(len(policy.tokenizer)) if t not in set(policy.tokenizer.all_special_ids) | {pose}]
    gen = torch.Generator().manual_seed(0)
    words = [[plain[i] for i in torch.randint(0, len(plain), (9,), generator=gen)] for _ in range(4)]
    responses = [
        words[0][:3] + [pose] + words[0][3:5],  # <POSE> in the middle
        words[1][:6] + [pose, pose],  # two: the first counts
        words[2][:9],  # none
        [pose],
    ]
    prompt_ids = [prompts[0], prompts[1], prompts[0], prompts[1]]
    mu, log_std, has = pose_from_response(policy, prompt_ids, responses, batch_size=3)
    with torch.no_grad():
        full = policy(policy.build_inputs(prompt_ids, responses, [None] * 4, [None] * 4))
    assert has.tolist() == [True, True, False, True] == full["has_pose"].tolist()
    torch.testing.assert_close(mu, full["mu"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_std, full["log_std"], rtol=1e-5, atol=1e-5)
