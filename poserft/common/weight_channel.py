"""`WeightChannel`: a broadcast group from the learner (rank 0) to the receivers of one rollout
worker, for `rl.rollout.weight_sync: broadcast`.

On GPUs it is an NCCL communicator (vLLM's stateless group, the kind its weight-transfer API opens
with the engine's workers); on CPU a gloo group over its own TCP store. Either way it stands apart
from any `torch.distributed` default group (the learner's data-parallel ranks keep theirs), and
every member calls `broadcast` with the same tensors in the same order: the sender's are read,
the receivers' are overwritten.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import torch
import torch.distributed as dist


def endpoint() -> dict:
    """A free TCP port on this node, as {"master_address", "master_port"}, for a new channel."""
    try:
        import ray

        address = ray.util.get_node_ip_address()
    except Exception:  # not in a Ray worker: a local channel
        address = "127.0.0.1"
    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    return {"master_address": address, "master_port": port}


class WeightChannel:
    def __init__(self, comm, device: torch.device, rank: int, world_size: int):
        self._comm, self.device, self.rank, self.world_size = comm, device, rank, world_size

    @classmethod
    def open(cls, address: str, port: int, rank: int, world_size: int, device: torch.device, timeout_s: float = 600.0):
        """Join the channel; blocks until all `world_size` members have joined."""
        if world_size < 2 or not 0 <= rank < world_size:
            raise ValueError(
                f"a weight channel needs rank in [0, world_size) and world_size >= 2, got {rank}/{world_size}"
            )
        if device.type == "cuda":
            from vllm.distributed.weight_transfer.nccl_common import stateless_init_process_group

            comm = stateless_init_process_group(address, port, rank, world_size, device=device.index or 0)
        else:
            store = dist.TCPStore(address, port, world_size, is_master=rank == 0, timeout=timedelta(seconds=timeout_s))
            comm = dist.ProcessGroupGloo(store, rank, world_size, timedelta(seconds=timeout_s))
        return cls(comm, device, rank, world_size)

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's `tensor` to every member (in place on the receivers); returns it."""
        if not tensor.is_contiguous():
            if self.rank != 0:
                raise ValueError("a receiving buffer must be contiguous")
            tensor = tensor.contiguous()
        if self.device.type == "cuda":
            self._comm.broadcast(tensor, src=0, stream=torch.cuda.current_stream())
        else:
            opts = dist.BroadcastOptions()
            opts.rootRank = 0
            self._comm.broadcast([tensor], opts).wait()
        return tensor

    def close(self) -> None:
        if self._comm is not None and self.device.type == "cuda":
            self._comm.destroy()
        self._comm = None


def tensor_meta(state: dict[str, torch.Tensor]) -> list[tuple[str, str, list[int]]]:
    """(name, dtype name, shape) per tensor, in the order a channel sends them."""
    return [(k, str(v.dtype).removeprefix("torch."), list(v.shape)) for k, v in state.items()]


def send_state(channel: WeightChannel, state: dict[str, torch.Tensor]) -> int:
    """Broadcast every tensor of `state` (the sender's side); returns the bytes sent."""
    sent = 0
    for v in state.values():
        channel.broadcast(v)
        sent += v.numel() * v.element_size()
    return sent


def receive_state(channel: WeightChannel, meta: list[tuple[str, str, list[int]]]) -> dict[str, torch.Tensor]:
    """The receivers' side of `send_state`: fresh tensors on the channel's device."""
    out = {}
    for name, dtype, shape in meta:
        out[name] = channel.broadcast(torch.empty(shape, dtype=getattr(torch, dtype), device=channel.device))
    return out
