"""The policy: a Hugging Face causal LM + a vision encoder + a pose input encoder + a Gaussian
pose head on the last-layer hidden state at `<POSE>` (ChatPose-style, docs/architecture.md §5).

Sequences are `USER: {prompt}\\nASSISTANT: {response}</s>`. The prompt's `<image>` placeholder is
expanded to `image_tokens` positions filled with projected vision features; `<pose>` (the input
pose of pose2text) to one position filled with the pose input encoder's output; with a text tower
(`meta["text_tower"]`, poserft.model.text_tower) `text_tokens` `<text>` positions after `USER:`
are filled by `text_in` from the description's pooled MiniLM word embeddings. Everything the
LM sees is therefore expressible as prompt embeddings, which is how vLLM gets image prompts.

pi(a, p | q) = pi_LM(a | q) * N(p; mu(q, a), diag(exp(log_std(q, a))^2)), with p the 24x6D pose.

The vision path is chosen by `meta["vision"]["type"]`: "vit", the small built-in ViT of the
presets, or "clip", a CLIP ViT imported from a LLaVA-1.5 checkpoint (hidden states of the layer
LLaVA uses, CLS dropped, images resized and normalised in torch). `apply_training_switches`
freezes parts and wraps the LM in LoRA adapters for the learner.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from poserft.common.body import NUM_JOINTS, POSE_6D_DIM
from poserft.common.config.schema import POLICY_PART_NAMES
from poserft.common.rotations import axis_angle_to_rot6d
from poserft.common.schemas import IMAGE_TOKEN, POSE_INPUT_TOKEN, POSE_TOKEN, TEXT_TOKEN
from poserft.model.text_tower import WIDTH as TOWER_WIDTH
from poserft.model.text_tower import check_tower, pooled_word_embeddings, user_text

LOG2PI = math.log(2 * math.pi)


def chat_prompt(prompt: str, image_tokens: int, text_tokens: int = 0) -> str:
    """The text the LM sees before its response; `<image>` is expanded to `image_tokens` slots, and
    a policy with a text tower gets `text_tokens` `<text>` slots before the user's words."""
    slots = f"{TEXT_TOKEN * text_tokens} " if text_tokens else ""
    return f"USER: {slots}{prompt.replace(IMAGE_TOKEN, IMAGE_TOKEN * image_tokens)}\nASSISTANT:"


@dataclass
class HeadConfig:
    hidden_size: int
    width: int | None = None  # the mean MLP's hidden units; None = hidden_size (ChatPose)
    # > 0: the word path (`PosePolicy.head_input`): a text2pose row's head input is an MLP of this
    # width over its prompt's text-tower feature instead of h(<POSE>); 0 = none
    words_width: int = 0
    log_std_min: float = -5.0
    log_std_max: float = 0.0
    log_std_init: float = -1.5


def words_mlp(width: int, hidden: int) -> nn.Module:
    """The head's word path: a text-tower feature (384) -> LayerNorm -> width -> GELU -> hidden."""
    return nn.Sequential(nn.LayerNorm(TOWER_WIDTH), nn.Linear(TOWER_WIDTH, width), nn.GELU(), nn.Linear(width, hidden))


class GaussianPoseHead(nn.Module):
    """hidden (N, h) -> mu (N, 144) and log_std (N, 144) of a diagonal Gaussian over 24x6D.

    Mean: Linear(h, w) -> ReLU -> Linear(w, 144) (ChatPose: w = h), its bias initialised to the
    rest pose so an untrained head predicts identity rotations. log_std: a linear map squashed
    smoothly into [log_std_min, log_std_max].
    """

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        h, w = cfg.hidden_size, cfg.width or cfg.hidden_size
        self.mean = nn.Sequential(nn.Linear(h, w), nn.ReLU(), nn.Linear(w, POSE_6D_DIM))
        self.log_std = nn.Linear(h, POSE_6D_DIM)
        self.words = words_mlp(cfg.words_width, h) if cfg.words_width else None
        with torch.no_grad():
            self.mean[2].weight.mul_(0.1)
            self.mean[2].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0] * NUM_JOINTS))
            self.log_std.weight.mul_(0.01)
            lo, hi = cfg.log_std_min, cfg.log_std_max
            frac = (cfg.log_std_init - lo) / (hi - lo)
            self.log_std.bias.fill_(math.log(frac / (1 - frac)))

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        return self.mean(hidden), lo + (hi - lo) * torch.sigmoid(self.log_std(hidden))


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """log N(x; mu, diag(exp(log_std)^2)) over the last dim: summed or per-dimension mean."""
    lp = -0.5 * ((x - mu) / log_std.exp()) ** 2 - log_std - 0.5 * LOG2PI
    return lp.sum(-1) if reduce == "sum" else lp.mean(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    return (log_std + 0.5 * (1 + LOG2PI)).sum(-1)


def gaussian_kl(mu_p, log_std_p, mu_q, log_std_q) -> torch.Tensor:
    """KL(N_p || N_q) for diagonal Gaussians, summed over the last dim (closed form)."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    return (log_std_q - log_std_p + (var_p + (mu_p - mu_q) ** 2) / (2 * var_q) - 0.5).sum(-1)


class VisionEncoder(nn.Module):
    """A small ViT over rendered skeleton images: patches -> transformer -> pooled tokens."""

    def __init__(self, image_size: int, patch: int, width: int, layers: int, heads: int, out_tokens: int):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of the patch size {patch}")
        self.image_size, self.patch = image_size, patch
        grid = image_size // patch
        self.pool = int(round(math.sqrt(grid * grid / out_tokens)))
        if (grid // self.pool) ** 2 != out_tokens:
            raise ValueError(f"out_tokens {out_tokens} must be a square that divides the {grid}x{grid} patch grid")
        self.embed = nn.Conv2d(3, width, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(grid * grid, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, 0.0, batch_first=True, norm_first=True, activation="gelu"
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.grid = grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) floats in [0, 1] -> (N, out_tokens, width)."""
        x = self.embed(images * 2 - 1).flatten(2).transpose(1, 2) + self.pos
        x = self.norm(self.blocks(x))
        n, _, w = x.shape
        x = x.transpose(1, 2).reshape(n, w, self.grid, self.grid)
        x = F.avg_pool2d(x, self.pool)
        return x.flatten(2).transpose(1, 2)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation, as LLaVA-1.5 uses it
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipVisionEncoder(nn.Module):
    """A CLIP vision tower as LLaVA-1.5 uses it: the hidden states of `feature_layer` (-2: the
    second to last layer), without the CLS token for select strategy "default" ("full" keeps it)."""

    def __init__(
        self, clip_config: dict, feature_layer: int = -2, select: str = "default", mean=CLIP_MEAN, std=CLIP_STD
    ):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        if select not in ("default", "full"):
            raise ValueError(f"vision select strategy {select!r} is not one of default, full")
        self.tower = CLIPVisionModel(CLIPVisionConfig.from_dict(clip_config))
        self.feature_layer, self.select = int(feature_layer), select
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) floats in [0, 1] at the tower's image size -> (N, tokens, width)."""
        pixels = ((images.float() - self.mean) / self.std).to(self.tower.dtype)
        hidden = self.tower(pixel_values=pixels, output_hidden_states=True).hidden_states[self.feature_layer]
        return hidden[:, 1:] if self.select == "default" else hidden


def build_vision(v: dict) -> tuple[nn.Module, int]:
    """The vision encoder described by `meta["vision"]` and the width of its output tokens."""
    kind = v.get("type", "vit")
    if kind == "vit":
        return VisionEncoder(v["image_size"], v["patch"], v["width"], v["layers"], v["heads"], v["out_tokens"]), v[
            "width"
        ]
    if kind == "clip":
        enc = ClipVisionEncoder(
            v["clip_config"],
            v.get("feature_layer", -2),
            v.get("select_strategy", "default"),
            v.get("mean", CLIP_MEAN),
            v.get("std", CLIP_STD),
        )
        return enc, enc.tower.config.hidden_size
    raise ValueError(f"unknown vision type {kind!r} in poserft.json; known: vit, clip")


def decode_png(png: bytes, size: int | None = None) -> torch.Tensor:
    """PNG bytes -> (3, H, W) float tensor in [0, 1], resized (PIL, bilinear) to size x size if given."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def resize_and_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """CLIP's geometry in torch: scale the shorter side to `size` (bicubic, antialiased), then
    crop the centre size x size. (3, H, W) -> (3, size, size), values kept in [0, 1]."""
    _, h, w = img.shape
    if (h, w) != (size, size):
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        img = F.interpolate(img[None], size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)[0].clamp(
            0, 1
        )
        top, left = (nh - size) // 2, (nw - size) // 2
        img = img[:, top : top + size, left : left + size]
    return img


@dataclass
class PolicyInputs:
    """A right-padded batch ready for the LM."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    response_mask: torch.Tensor  # (B, L) True at positions whose *token* is part of the response
    prompt_lengths: list[int]
    images: torch.Tensor | None  # (B_img, 3, S, S) for the rows with an image, in order
    image_rows: list[int]
    pose_inputs: torch.Tensor | None  # (B_pose, 144)
    pose_input_rows: list[int]
    text_feats: torch.Tensor | None = None  # (B_text, 384) text-tower features of the rows with <text> slots
    text_rows: list[int] = field(default_factory=list)

    def to(self, device) -> PolicyInputs:
        """The same batch with every tensor on `device` (the policy's, e.g. a GPU learner's)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            response_mask=move(self.response_mask),
            images=move(self.images),
            pose_inputs=move(self.pose_inputs),
            text_feats=move(self.text_feats),
        )


class PosePolicy(nn.Module):
    """The LM and the three small modules, with the batch-level computations RL needs."""

    def __init__(self, lm, tokenizer, meta: dict):
        super().__init__()
        self.lm, self.tokenizer, self.meta = lm, tokenizer, meta
        h = lm.config.hidden_size
        v = meta["vision"]
        self.vision_type = v.get("type", "vit")
        self.image_tokens = v["out_tokens"]
        self.image_size = v["image_size"]
        self.vision, width = build_vision(v)
        bias = v.get("projector_bias", True)  # LLaVA's projector: Linear -> GELU -> Linear, same shapes
        self.projector = nn.Sequential(nn.Linear(width, h, bias=bias), nn.GELU(), nn.Linear(h, h, bias=bias))
        self.pose_in = nn.Sequential(nn.Linear(POSE_6D_DIM, h), nn.GELU(), nn.Linear(h, h))
        self.head = GaussianPoseHead(HeadConfig(h, **meta.get("head", {})))
        tower = meta.get("text_tower")  # poserft.model.text_tower; absent in checkpoints without one
        self.text_tokens = int(tower["tokens"]) if tower else 0
        self.text_in = (
            nn.Sequential(
                nn.LayerNorm(TOWER_WIDTH), nn.Linear(TOWER_WIDTH, h), nn.GELU(), nn.Linear(h, h * self.text_tokens)
            )
            if tower
            else nn.Sequential()
        )
        if tower:
            check_tower(tower["type"])
        # With head_skip the pose head also reads the description directly: h_pose + the mean of the
        # row's K `<text>` slot vectors (`pose_params`); no new weights, absent means off.
        self.text_head_skip = bool(tower.get("head_skip", False)) if tower else False
        ids = meta["token_ids"]
        self.text_token_id = ids.get(TEXT_TOKEN)
        self.pose_token_id, self.image_token_id, self.pose_input_token_id = (
            ids[POSE_TOKEN],
            ids[IMAGE_TOKEN],
            ids[POSE_INPUT_TOKEN],
        )
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id

    @property
    def device(self) -> torch.device:
        return self.head.mean[0].weight.device

    # ---- inputs ------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        return [self.tokenizer.bos_token_id] + self.tokenizer.encode(
            chat_prompt(prompt, self.image_tokens, self.text_tokens), add_special_tokens=False
        )

    def encode_response(self, response: str, eos: bool = True) -> list[int]:
        ids = self.tokenizer.encode(" " + response, add_special_tokens=False)
        return ids + [self.eos_token_id] if eos else ids

    def build_inputs(self, prompt_ids, response_ids, images=None, pose_inputs=None) -> PolicyInputs:
        """Token id lists (+ per-row PNG bytes or None, + per-row (72,) axis-angle or None)."""
        seqs = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
        length = max(len(s) for s in seqs)
        b = len(seqs)
        input_ids = torch.full((b, length), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((b, length), dtype=torch.long)
        resp = torch.zeros((b, length), dtype=torch.bool)
        for i, (p, s) in enumerate(zip(prompt_ids, seqs)):
            input_ids[i, : len(s)] = torch.tensor(s)
            attn[i, : len(s)] = 1
            resp[i, len(p) : len(s)] = True
        images = images or [None] * b
        pose_inputs = pose_inputs if pose_inputs is not None else [None] * b
        image_rows = [i for i, im in enumerate(images) if im is not None]
        pose_rows = [i for i, p in enumerate(pose_inputs) if p is not None]
        imgs = torch.stack([self.load_image(images[i]) for i in image_rows]) if image_rows else None
        poses = None
        if pose_rows:
            aa = torch.tensor(
                np.stack([np.asarray(pose_inputs[i], dtype=np.float32).reshape(NUM_JOINTS, 3) for i in pose_rows])
            )
            poses = axis_angle_to_rot6d(aa).reshape(len(pose_rows), POSE_6D_DIM)
        inp = PolicyInputs(input_ids, attn, resp, [len(p) for p in prompt_ids], imgs, image_rows, poses, pose_rows)
        if self.text_tokens:
            inp.text_rows = [i for i, p in enumerate(prompt_ids) if self.text_token_id in p]
            inp.text_feats = self.text_features([prompt_ids[i] for i in inp.text_rows]) if inp.text_rows else None
        return inp.to(self.device) if self.device.type != "cpu" else inp

    def text_features(self, prompt_ids) -> torch.Tensor:
        """(N, 384) text-tower input of each prompt: its user words, decoded from the ids (a group's
        shared prompt is decoded once)."""
        unique = {tuple(p): None for p in prompt_ids}
        keys = list(unique)
        texts = [user_text(self.tokenizer.decode(list(k), skip_special_tokens=True)) for k in keys]
        feats = pooled_word_embeddings(texts)
        row = {k: i for i, k in enumerate(keys)}
        return feats[[row[tuple(p)] for p in prompt_ids]]

    def load_image(self, png: bytes) -> torch.Tensor:
        """PNG bytes -> (3, S, S) in [0, 1] at the vision encoder's size."""
        if self.vision_type == "clip":
            return resize_and_crop(decode_png(png), self.image_size)
        return decode_png(png, self.image_size)

    def embed(self, inp: PolicyInputs) -> torch.Tensor:
        """Token embeddings with image and input-pose slots replaced by their encoders' outputs.
        Slots are prompt positions only: a response that happens to contain <image> or <pose>
        (a sampled token like any other) keeps those tokens' embeddings."""
        emb = self.lm.get_input_embeddings()(inp.input_ids)
        in_prompt = ~inp.response_mask
        if inp.images is not None:
            feats = self.projector(self.vision(inp.images)).to(emb.dtype)  # (B_img, T, h)
            for k, row in enumerate(inp.image_rows):
                slots = ((inp.input_ids[row] == self.image_token_id) & in_prompt[row]).nonzero().squeeze(-1)
                if len(slots) != self.image_tokens:
                    raise ValueError(
                        f"row {row}: prompt has {len(slots)} image slots, expected {self.image_tokens} (one <image> "
                        "placeholder)"
                    )
                emb = emb.index_put((torch.full_like(slots, row), slots), feats[k])
        if inp.pose_inputs is not None:
            feats = self.pose_in(inp.pose_inputs.to(emb.dtype))
            for k, row in enumerate(inp.pose_input_rows):
                slots = ((inp.input_ids[row] == self.pose_input_token_id) & in_prompt[row]).nonzero().squeeze(-1)
                if len(slots) != 1:
                    raise ValueError(f"row {row}: prompt has {len(slots)} <pose> slots, expected 1")
                emb = emb.index_put((torch.full_like(slots, row), slots), feats[k : k + 1])
        if inp.text_feats is not None:
            k_slots = self.text_tokens
            feats = self.text_in(inp.text_feats.to(emb.dtype)).reshape(len(inp.text_rows), k_slots, -1)
            for k, row in enumerate(inp.text_rows):
                slots = ((inp.input_ids[row] == self.text_token_id) & in_prompt[row]).nonzero().squeeze(-1)
                if len(slots) != k_slots:
                    raise ValueError(f"row {row}: prompt has {len(slots)} <text> slots, expected {k_slots}")
                emb = emb.index_put((torch.full_like(slots, row), slots), feats[k])
        return emb

    def prompt_embeds(self, prompt_ids: list[int], image: bytes | None = None, pose_input=None) -> torch.Tensor:
        """(L, h) embeddings of one prompt, for vLLM's `prompt_embeds` input."""
        inp = self.build_inputs([prompt_ids], [[]], [image], [pose_input])
        return self.embed(inp)[0]

    # ---- outputs -----------------------------------------------------------------------
    def forward(self, inp: PolicyInputs, with_logits: bool = False, detach_pose_hidden: bool = False) -> dict:
        """Token log-probs of each position's token (B, L; 0 where not response), hidden states
        at the first response `<POSE>` (B, h) with a has_pose mask, and mu/log_std (B, 144).
        `detach_pose_hidden`: gradients of mu/log_std stop at the hidden state (train the head only)."""
        emb = self.embed(inp)
        out = self.lm(inputs_embeds=emb, attention_mask=inp.attention_mask, output_hidden_states=True, use_cache=False)
        logits = out.logits[:, :-1].float()
        targets = inp.input_ids[:, 1:]
        logp = torch.log_softmax(logits, -1)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        mask = inp.response_mask[:, 1:]
        token_logp = torch.where(mask, token_logp, torch.zeros_like(token_logp))
        hidden = out.hidden_states[-1]
        pose_pos, has_pose = self.pose_positions(inp)
        h_pose = hidden[torch.arange(hidden.shape[0], device=hidden.device), pose_pos]
        mu, log_std = self.pose_params(h_pose, inp, detach_pose_hidden)
        res = {
            "token_logp": token_logp,
            "mask": mask,
            "hidden_pose": h_pose,
            "has_pose": has_pose,
            "mu": mu,
            "log_std": log_std,
        }
        if with_logits:
            res["logp_all"] = logp
        return res

    def pose_params(
        self, hidden_pose: torch.Tensor, inp: PolicyInputs, detach: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, log_std (B, 144) from the `<POSE>` hidden states (B, h) of the batch `inp`. With
        `meta["text_tower"]["head_skip"]` the head reads `hidden_pose + skip`, `skip` being the mean
        of the K slot vectors `text_in` makes for a row with `<text>` slots (rows `inp.text_rows`;
        zero elsewhere). `detach`: gradients stop at both (train the head only)."""
        x = self.head_input(hidden_pose, inp)
        return self.head(x.detach() if detach else x)

    def head_input(self, hidden_pose: torch.Tensor, inp: PolicyInputs) -> torch.Tensor:
        """What the pose head reads (B, h): the `<POSE>` hidden state, plus the text skip (above).
        With the word path (`meta["head"]["words_width"]`, made by the SFT head refit) a row with
        `<text>` slots and no image or input pose (a text2pose prompt) reads `head.words` of its
        text-tower feature instead: the pose comes from the description's words, the tiny LM's
        hidden state carries too little of them (NOTES.md, issue 14)."""
        x = hidden_pose.float()
        if inp.text_feats is None:
            return x
        if self.text_head_skip:
            n = len(inp.text_rows)
            slots = self.text_in(inp.text_feats.to(x.device, self.text_in[1].weight.dtype)).reshape(
                n, self.text_tokens, -1
            )
            rows = torch.as_tensor(inp.text_rows, device=x.device, dtype=torch.long)
            x = x + torch.zeros_like(x).index_add(0, rows, slots.mean(1).float())
        if self.head.words is not None:
            other = set(inp.image_rows) | set(inp.pose_input_rows)
            keep = [k for k, r in enumerate(inp.text_rows) if r not in other]
            if keep:
                feats = inp.text_feats[keep].to(x.device, self.head.words[1].weight.dtype)
                rows = torch.as_tensor([inp.text_rows[k] for k in keep], device=x.device, dtype=torch.long)
                x = x.index_copy(0, rows, self.head.words(feats).float())
        return x

    def pose_positions(self, inp: PolicyInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of the first response `<POSE>` per row (0 if none) and whether there is one."""
        is_pose = (inp.input_ids == self.pose_token_id) & inp.response_mask
        has = is_pose.any(1)
        return torch.where(has, is_pose.float().argmax(1), torch.zeros_like(has, dtype=torch.long)), has

    # ---- files -------------------------------------------------------------------------
    def extra_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the non-LM parts (vision, projector, pose_in, head, text_in) under their prefixes."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("lm.")}


def pose_token_count(text: str) -> int:
    return text.count(POSE_TOKEN)


def load_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / "poserft.json").read_text())


# ---- what the learner trains -------------------------------------------------------------------
POLICY_PARTS = POLICY_PART_NAMES  # attributes of PosePolicy; model.train names them


def apply_training_switches(policy: PosePolicy, model_cfg, saved_adapter: Path | None = None) -> dict:
    """Fix the parts whose `model_cfg.train` multiplier is 0 and, with `model_cfg.lora.enabled`,
    wrap the LM in LoRA adapters (peft; the LM's own weights then stay fixed, the adapters and
    `lora.modules_to_save` train). `saved_adapter`: the adapter folder of the checkpoint a LoRA run
    resumes from (see `poserft.model.lora.wrap`). The reference policy never gets these.

    Returns the switches as applied, also kept as `policy.switches`: freeze (the fixed parts),
    lora (settings or None), base_unmerged (whether a saved adapter was restored on top of
    unmerged weights)."""
    from poserft.common.config import ModelConfig, validate_config
    from poserft.model import lora

    if isinstance(model_cfg, dict):
        model_cfg = validate_config(model_cfg, ModelConfig)  # ConfigError naming the key
    freeze = [part for part, scale in model_cfg.train.parts().items() if scale == 0]
    lcfg = model_cfg.lora
    restored = False
    if lcfg.enabled:
        if lora.is_wrapped(policy.lm):
            raise ValueError("the policy's LM already has LoRA adapters; apply the training switches once")
        policy.lm, restored = lora.wrap(policy.lm, lcfg, saved_adapter)
    for part in freeze:
        getattr(policy, part).requires_grad_(False)
    policy.switches = {"freeze": freeze, "lora": lcfg.model_dump() if lcfg.enabled else None, "base_unmerged": restored}
    return policy.switches
