#!/usr/bin/env bash
# CI: install and start the two-node Slurm test bed that tests/slurm runs slurm/*.sbatch on
# (tools/slurm_testbed.sh; needs root and apt-get, about 10 s on a fresh Debian/Ubuntu machine).
# Call it before the tests, and export GPT_DIST_REQUIRE_SLURM=1 for them: tests/slurm then fails
# instead of skipping when the test bed is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/slurm_testbed.sh start
tools/slurm_testbed.sh status
