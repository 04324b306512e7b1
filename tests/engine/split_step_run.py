"""Run by test_train_step.py on several ranks (torchrun): one step of an objective with the
global batch split over the ranks; rank 0 writes the loss, grad_norm and gradient to argv[3].
`dpo_reference` instead scores DPO reference log-probs with the policy engine."""

import sys

import torch

from gpt_dist.engine.distributed import init_distributed

from step_cases import reference_table, run_one_step

if __name__ == "__main__":
    dist = init_distributed()
    objective, micro, out_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    zero_stage = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if objective == "dpo_reference":
        table = reference_table(dist, zero_stage)
        if dist.is_main:
            torch.save({"table": table}, out_file)
        sys.exit(0)
    out, grad_norm, grad, _ = run_one_step(objective, micro, dist, zero_stage)
    if dist.is_main:
        torch.save({"loss": out.loss, "grad_norm": float(grad_norm), "grad": grad, "units": out.units,
                    "metrics": out.metrics}, out_file)
