"""Process-group set-up from whatever launched us: the deepspeed launcher, torchrun, srun, or
nothing (one process)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _release_shm_workspace() -> None:
    """Unlink this rank's DeepSpeed CPU all-reduce workspace from /dev/shm once every rank has it mapped.

    DeepSpeed's shared-memory all-reduce (CPU ranks on one host, the deepspeed launcher's
    LOCAL_SIZE == world size) creates `/dev/shm/deepspeed_allreduce_buffer_{uid}_{addr}_{port}_{rank}`
    (~66 MiB) per rank and never unlinks it, so every run left ~66 MiB x ranks of RAM behind.
    After the barrier every peer has mapped every workspace; unlinking only removes the name and
    the mappings stay valid until the processes exit, even when they are killed."""
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""),
        torch.distributed.get_rank())
    if torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()  # on every rank, whether or not it has a workspace
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except FileNotFoundError:
        pass  # the shm op is not built, or the ranks span hosts


def init_distributed() -> DistInfo:
    """Initialise torch.distributed (nccl on GPUs, gloo on CPU) through DeepSpeed and return
    this process's rank and device. A bare `python -m gpt_dist.cli train` is a world of one."""
    import deepspeed

    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ and "WORLD_SIZE" not in os.environ:
        # srun launching one task per rank directly (no torchrun): map SLURM's variables.
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    alone = "RANK" not in os.environ  # no launcher: a world of one, set up here
    if alone:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
        if backend == "gloo":
            _release_shm_workspace()
    if alone:
        # The group exists; DeepSpeed reads only LOCAL_RANK from here on. Processes this one
        # starts (a launcher, a test's subprocess) must not inherit a port that is now taken.
        for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None)
    return DistInfo(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local_rank,
        device=device,
    )


def leave_distributed() -> None:
    """Tear down the process group a command started (bench, eval): every rank waits for the
    others (rank 0's output is written), then DeepSpeed's own teardown, which also drops the
    groups DeepSpeed cached from it. torch's destroy_process_group alone leaves those behind, and
    the next engine built in this process (a training run after `gpt-dist bench --zero-stage` in
    the same interpreter) fails on them ("Group ... is not registered"). Left to exit-time
    destructors instead, a gloo rank can abort with "terminate called without an active
    exception" after its work is done."""
    if torch.distributed.is_initialized():
        import deepspeed.comm

        torch.distributed.barrier()
        deepspeed.comm.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over all ranks (a copy; `t` itself is left as it is). A world of one
    still calls the collective (it costs nothing there), so it behaves as on many ranks."""
    if torch.distributed.is_initialized():
        t = t.clone()
        torch.distributed.all_reduce(t)
    return t


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
