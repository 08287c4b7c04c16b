#!/usr/bin/env bash
# GRPO on a running multi-node Ray cluster: recipes/multinode/grpo_ray.sh <model> <dataset> [hydra overrides ...]
# Run on the head node after `ray start` on every node (recipes/multinode/README.md).
# Environment: NNODES (required, >= 2), GPUS_PER_NODE [4], RAY_ADDRESS [auto], plus those of recipes/grpo.sh.
set -euo pipefail
die() { echo "recipes/multinode/grpo_ray.sh: error: $*" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -ge 2 ]] || die "usage: recipes/multinode/grpo_ray.sh <model> <dataset> [hydra overrides ...]"
source "$HERE/check_cluster.sh"
exec "$HERE/../grpo.sh" "$@"
