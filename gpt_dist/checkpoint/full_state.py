"""A ZeRO checkpoint's whole training state per parameter, and putting it into an engine of
another data-parallel world size: how a `train.optimizer: muon` run resumes on M ranks after
saving on N.

DeepSpeed's universal format (used for AdamW, gpt_dist.checkpoint.training_state) knows Adam's
moments only. Muon's momentum is laid out differently by each ZeRO stage:

    ZeRO-1/2  optimizer_state_dict.base_optimizer_state.state[g]["momentum_buffer"]: the FULL
              tensors of the parameters that meet rank r's partition of group g, one after
              another, in the group's flat order; a parameter split over two partitions is held
              whole (and identical) on both ranks
    ZeRO-3    optimizer_state_dict.optimizer_state_dict.state[k]["momentum_buffer"]: laid out
              like the fp32 partition of sub-group k (each parameter's slice of
              ceil(numel / N) elements, the last one zero-padded)

Every other tensor state (AdamW's exp_avg and exp_avg_sq, the fp32 master weights) follows the
fp32 partition. `read_full_state` rebuilds every parameter's full tensor per state name from
the N optimizer files, lazily (memory-mapped, one parameter at a time), read weights-only;
`load_full_state` writes them into a freshly built engine's partitions through DeepSpeed's
fragment API (`safe_set_full_fp32_param`, `safe_set_full_optimizer_state`) and writes the
ZeRO-1/2 momentum layout itself, which that API does not cover. Nothing is written to disk on
the way, so there is no half-converted checkpoint to mistake for a good one; the resumed run's
own saves are ordinary checkpoints of its world size. `gather_full_state` is the inverse on a
live engine (every rank gets every full tensor), for checking a load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpt_dist.checkpoint.deepspeed_reader import ZERO0_MODEL_FILE, expected_files
from gpt_dist.checkpoint.lazy_tensor import LazyTensor
from gpt_dist.checkpoint.safe_load import load_file
from gpt_dist.errors import CheckpointError

FP32 = "fp32"  # the master weights, beside the optimizer's own state names
MOMENTUM = "momentum_buffer"  # Muon's state (DeepSpeed's MuonWithAuxAdam)


@dataclass
class ParamState:
    """One trainable parameter's full state: `tensors` by state name (FP32, exp_avg, exp_avg_sq
    or momentum_buffer), each of `shape`, fp32 on the CPU when loaded; `step`: the optimizer's
    step count for its group (None for Muon's, which keeps none)."""

    shape: tuple[int, ...]
    tensors: dict[str, LazyTensor] = field(default_factory=dict)
    step: Any = None


@dataclass
class FullState:
    """What `read_full_state` found: every trainable parameter by name, and DeepSpeed's own
    engine counters (global_steps, global_samples, skipped_steps) as saved."""

    params: dict[str, ParamState]
    counters: dict[str, int]


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: {what}; the file is damaged or was not written by this version's ZeRO optimizer; copy the tag "
        "folder again or pick another tag"
    )


def _get(d: Any, path: Path, *keys: Any) -> Any:
    """d[k1][k2]...; a missing key is a CheckpointError naming the file and the key path."""
    for i, k in enumerate(keys):
        if not isinstance(d, (dict, list, tuple)) or (isinstance(d, dict) and k not in d) or (
                not isinstance(d, dict) and not (isinstance(k, int) and 0 <= k < len(d))):
            raise _damaged(path, f"has no {'.'.join(str(x) for x in keys[:i + 1])}")
        d = d[k]
    return d


def _span(parts: list[torch.Tensor], part_numel: int, offset: int, numel: int) -> torch.Tensor:
    """Elements [offset, offset + numel) of the concatenation of `parts` (each `part_numel`
    long), without building the concatenation."""
    pieces = []
    while numel > 0:
        r, start = divmod(offset, part_numel)
        take = min(numel, part_numel - start)
        pieces.append(parts[r].narrow(0, start, take))
        offset, numel = offset + take, numel - take
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


def _lazy(shape: tuple[int, ...], read) -> LazyTensor:
    return LazyTensor(shape, lambda: read().float().reshape(shape).clone())


def read_full_state(tag_dir: Path, meta: dict[str, Any]) -> FullState:
    """Every trainable parameter's full fp32 weights and optimizer state in the ZeRO-1/2/3 tag
    `tag_dir` (saved by meta["world_size"] ranks), lazily. Errors name the file."""
    stage, world = meta.get("zero_stage"), meta.get("world_size")
    if stage not in (1, 2, 3):
        raise CheckpointError(f"{tag_dir}: ZeRO stage {stage!r} has no partitioned optimizer state to reshard")
    files = expected_files(tag_dir, stage, world)
    optim = [f for f in files if f.name.endswith("_optim_states.pt")]
    model_file = tag_dir / (ZERO0_MODEL_FILE if stage < 3 else "zero_pp_rank_0_mp_rank_00_model_states.pt")
    model_states = load_file(model_file, mmap=True)
    shapes = _get(model_states, model_file, "param_shapes")
    counters = {k: int(_get(model_states, model_file, k)) for k in ("global_steps", "skipped_steps")}
    counters["global_samples"] = int(model_states.get("global_samples", 0))
    sds = [(f, _get(load_file(f, mmap=True), f, "optimizer_state_dict")) for f in optim]
    read = _read_zero3 if stage == 3 else _read_zero12
    return FullState(read(sds, shapes), counters)


def _read_zero12(sds: list[tuple[Path, dict]], shapes: list[dict]) -> dict[str, ParamState]:
    """ZeRO-1/2: group g's flat tensor (its parameters in `shapes[g]` order, each followed by its
    alignment padding) is cut into N equal partitions, one per rank."""
    world = len(sds)
    out: dict[str, ParamState] = {}
    for g, group_shapes in enumerate(shapes):
        flats = [_get(sd, f, "single_partition_of_fp32_groups", g) for f, sd in sds]
        part = flats[0].numel()
        for (f, _), t in zip(sds, flats):
            if t.numel() != part:
                raise _damaged(f, f"its partition of parameter group {g} has {t.numel()} elements, rank 0's {part}")
        states = [_get(sd, f, "base_optimizer_state", "state", g) for f, sd in sds]
        paddings = _get(sds[0][1], sds[0][0], "param_alignment_paddings", g)
        offset, momentum_at = 0, [0] * world
        for j, (name, shape) in enumerate(group_shapes.items()):
            shape, numel = tuple(shape), math.prod(shape)
            if offset + numel > part * world:
                raise _damaged(sds[-1][0], f"parameter group {g} ends before {name} (the shards come from another model)")
            ps = out[name] = ParamState(shape, step=states[0].get("step"))
            ps.tensors[FP32] = _lazy(shape, lambda o=offset, n=numel, fl=flats, pn=part: _span(fl, pn, o, n))
            for key, value in states[0].items():
                if key == MOMENTUM or not isinstance(value, torch.Tensor):
                    continue
                parts = [_get(st, f, key) for st, (f, _) in zip(states, sds)]
                ps.tensors[key] = _lazy(shape, lambda o=offset, n=numel, pa=parts, pn=part: _span(pa, pn, o, n))
            if MOMENTUM in states[0]:
                # Held whole by every rank whose partition the parameter meets; read it from the first.
                first = offset // part
                for r in range(first, min(world, (offset + numel - 1) // part + 1)):
                    if r == first:
                        buf = _get(states[r], sds[r][0], MOMENTUM)
                        ps.tensors[MOMENTUM] = _lazy(shape, lambda b=buf, o=momentum_at[r], n=numel: b.narrow(0, o, n))
                    momentum_at[r] += numel
            offset += numel + int(paddings[j] if j < len(paddings) else 0)
        if MOMENTUM in states[0]:
            for r, (f, _) in enumerate(sds):
                have = _get(states[r], f, MOMENTUM).numel()
                if have != momentum_at[r]:
                    raise _damaged(f, f"its Muon momentum of parameter group {g} has {have} elements, but the "
                                      f"parameters in its partition have {momentum_at[r]}")
    return out


def _read_zero3(sds: list[tuple[Path, dict]], shapes: list[dict]) -> dict[str, ParamState]:
    """ZeRO-3: sub-group k's flat partition on rank r holds, for each parameter of `shapes[k]` in
    order, elements [r * p, (r + 1) * p) of it, p = ceil(numel / N), zero-padded at the end."""
    world = len(sds)
    out: dict[str, ParamState] = {}
    for k, group_shapes in enumerate(shapes):
        flats = [_get(sd, f, "fp32_flat_groups", k) for f, sd in sds]
        states = [_get(sd, f, "optimizer_state_dict", "state", k) for f, sd in sds]
        tensor_keys = [key for key, v in states[0].items() if isinstance(v, torch.Tensor)]
        sources = {FP32: flats} | {key: [_get(st, f, key) for st, (f, _) in zip(states, sds)] for key in tensor_keys}
        offset = 0
        for name, shape in group_shapes.items():
            shape, numel = tuple(shape), math.prod(shape)
            p = math.ceil(numel / world)
            ps = out[name] = ParamState(shape, step=states[0].get("step"))
            for key, parts in sources.items():
                for r, t in enumerate(parts):
                    if offset + p > t.numel():
                        raise _damaged(sds[r][0], f"its {key} of sub-group {k} ends before {name} ({t.numel()} "
                                                  "elements); the shards come from another model or save")
                ps.tensors[key] = _lazy(shape, lambda o=offset, p=p, n=numel, pa=parts:
                                        torch.cat([t.narrow(0, o, p) for t in pa])[:n])
            offset += p
    return out


# --------------------------------------------------------------------------- into an engine

def _zero_optimizer(engine):
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    opt = engine.optimizer
    if not isinstance(opt, (DeepSpeedZeroOptimizer, DeepSpeedZeroOptimizer_Stage3)):
        raise TypeError(f"expected a ZeRO-1/2/3 engine, got the optimizer {type(opt).__name__}")
    return opt, isinstance(opt, DeepSpeedZeroOptimizer_Stage3)


def _groups(opt, stage3: bool) -> list[tuple[list[torch.nn.Parameter], torch.Tensor]]:
    """(the parameters, the flat fp32 partition) of each (sub-)group of a ZeRO optimizer."""
    if stage3:
        return list(zip(opt.fp16_groups, opt.fp32_partitioned_groups_flat))
    return list(zip(opt.bit16_groups, opt.single_partition_of_fp32_groups))


def load_full_state(engine, full: FullState, source: Path) -> None:
    """Put `full` (read_full_state) into a freshly built ZeRO-1/2/3 `engine` of any world size:
    fp32 master weights, the module's weights from them, every optimizer state and step, and
    DeepSpeed's engine counters. Call on every rank (it ends in collectives)."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    opt, stage3 = _zero_optimizer(engine)
    inner = opt.optimizer  # MuonWithAuxAdam: its state is keyed by the flat fp32 partitions
    names = opt.param_names
    groups = _groups(opt, stage3)
    for params, _ in groups:  # checked before anything changes; every rank reaches the same verdict
        for p in params:
            shape = tuple(getattr(p, "ds_shape", p.shape))  # ZeRO-3 leaves a placeholder in p itself
            saved = full.params.get(names[p])
            if saved is None or tuple(saved.shape) != shape:
                raise CheckpointError(
                    f"{source}: {names[p]} is " + ("missing from the optimizer state" if saved is None else
                                                   f"of shape {saved.shape}, the model's is {shape}")
                    + "; the checkpoint comes from another model")
    for g, (params, flat) in enumerate(groups):
        if not params:
            continue
        saved = full.params[names[params[0]]]
        need = {MOMENTUM} if getattr(params[0], "use_muon", False) else {"exp_avg", "exp_avg_sq"}
        if not need <= set(saved.tensors):
            raise CheckpointError(
                f"{source}: {names[params[0]]} has no {' or '.join(sorted(need - set(saved.tensors)))} state, so the run "
                "was saved with another train.optimizer; resume with the one it was saved with (or start from it with "
                "checkpoint.init_from and checkpoint.resume: never)"
            )
        state = inner.state.setdefault(flat, {})
        for key in saved.tensors:
            if key == FP32 or (key == MOMENTUM and not stage3):
                continue
            if key not in state or state[key].shape != flat.shape:
                state[key] = torch.zeros_like(flat)
        if saved.step is not None:
            state["step"] = saved.step
        if MOMENTUM in saved.tensors and not stage3 and opt.params_in_partition[g]:
            # The full tensors of the parameters this rank's partition meets (stage_1_and_2.py,
            # _muon_momentum_buffer / get_flat_partition), in the partition's order.
            state[MOMENTUM] = torch.cat([full.params[names[p]].tensors[MOMENTUM].load().flatten()
                                         for p in opt.params_in_partition[g]]).to(flat.device)
    if not stage3:
        _link_fragments(opt)
    for params, _ in groups:
        for p in params:
            for key, lt in full.params[names[p]].tensors.items():
                value = lt.load().to(engine.device)
                if key == FP32:
                    safe_set_full_fp32_param(p, value)
                elif stage3 or key != MOMENTUM:
                    safe_set_full_optimizer_state(p, value, key)
    _weights_from_fp32(opt, stage3)
    for k, v in full.counters.items():
        setattr(engine, k, v)


def _link_fragments(opt) -> None:
    """Point each ZeRO-1/2 parameter's fragment at the optimizer state tensors there are now
    (DeepSpeed links them only after its first step, and not again after a load)."""
    opt._hp_optimizer_states_linked = False
    opt._lazy_init_hp_params_optimizer_state()


@torch.no_grad()
def _weights_from_fp32(opt, stage3: bool) -> None:
    """The module's (training-dtype) weights from the fp32 master partitions just set."""
    if not stage3:
        opt.update_lp_params()  # copies this rank's partition and all-gathers the rest
        return
    # What DeepSpeed's ZeRO-3 universal load does after setting its fp32 partitions.
    for k, fp32 in enumerate(opt.fp32_partitioned_groups_flat):
        flat16 = opt.fp16_partitioned_groups_flat[k]
        if fp32.numel() > 0:
            flat16.data.copy_(fp32.data)
        for param, q in zip(opt.fp16_partitioned_groups[k], opt.unflatten(flat16, opt.fp16_partitioned_groups[k])):
            param.data = q.data


def gather_full_state(engine) -> dict[str, dict[str, torch.Tensor]]:
    """Every trainable parameter's full fp32 weights and optimizer state in a live ZeRO-1/2/3
    `engine`, on every rank (CPU): the inverse of `load_full_state`. Collective: call on every
    rank. Through DeepSpeed's `safe_get_*`, and for the ZeRO-1/2 Muon momentum an all-reduce
    to which only the first rank holding each parameter contributes."""
    import torch.distributed as tdist
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    opt, stage3 = _zero_optimizer(engine)
    inner, names = opt.optimizer, opt.param_names
    if not stage3:
        _link_fragments(opt)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for g, (params, flat) in enumerate(_groups(opt, stage3)):
        state = inner.state.get(flat, {})
        keys = [k for k, v in state.items() if isinstance(v, torch.Tensor) and (stage3 or k != MOMENTUM)]
        for p in params:
            entry = out[names[p]] = {FP32: safe_get_full_fp32_param(p).cpu()}
            for key in keys:
                entry[key] = safe_get_full_optimizer_state(p, key).cpu()
        if MOMENTUM in state and not stage3:
            mine: dict[int, tuple[int, bool]] = {}  # id -> (offset in buf, began on an earlier rank)
            buf, at = state[MOMENTUM], 0
            for i, p in enumerate(opt.params_in_partition[g]):
                mine[id(p)] = (at, i == 0 and opt.first_offset[g] > 0)
                at += p.numel()
            for p in params:
                full = torch.zeros(p.numel(), dtype=torch.float32, device=flat.device)
                if id(p) in mine and not mine[id(p)][1]:
                    full.copy_(buf.narrow(0, mine[id(p)][0], p.numel()))
                if tdist.is_initialized():
                    tdist.all_reduce(full)
                out[names[p]][MOMENTUM] = full.reshape(p.shape).cpu()
    return out
