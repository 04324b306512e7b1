"""Run by test_train_step.py on several ranks (torchrun), once for all its multi-rank cases:
`split_step_run.py OUT JOB...`, each JOB `OBJECTIVE:MICRO[:ZERO_STAGE]`. A job is one step of the
objective with the global batch split over the ranks (the loss, grad_norm and gradient), or for
`dpo_reference` the DPO reference log-probs scored by the policy engine. Rank 0 saves
{JOB: result} to OUT."""

import sys

import torch

from gpt_dist.engine.distributed import init_distributed

from step_cases import reference_table, run_one_step

if __name__ == "__main__":
    dist = init_distributed()
    out_file, results = sys.argv[1], {}
    for job in sys.argv[2:]:
        objective, micro, *rest = job.split(":")
        zero_stage = int(rest[0]) if rest else 0
        if objective == "dpo_reference":
            results[job] = {"table": reference_table(dist, zero_stage)}
            continue
        out, grad_norm, grad, _ = run_one_step(objective, int(micro), dist, zero_stage)
        results[job] = {"loss": out.loss, "grad_norm": float(grad_norm), "grad": grad, "units": out.units,
                        "metrics": out.metrics}
    if dist.is_main:
        torch.save(results, out_file)
