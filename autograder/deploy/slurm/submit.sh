#!/bin/bash
# Grade a class on Slurm: a job array of SHARDS tasks (grade-array.sbatch), then one merge job
# (merge.sbatch) that starts only once every task succeeded. Run from the repository's root:
#
#   export SHARDS=4 ASSIGNMENTS=all SUBMISSIONS=/shared/submitted COURSE=/shared/course
#   export GRADEBOOK_URL=postgresql+psycopg2://grader@db.example.org/gradebook
#   autograder/deploy/slurm/submit.sh [more sbatch options, e.g. --partition=cpu]
#
# Both jobs get this environment (sbatch --export=ALL). Prints the two job ids.
set -euo pipefail
: "${SHARDS:?set SHARDS, the number of shards (array tasks)}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
array_job="$(sbatch --parsable --export=ALL --array="0-$((SHARDS - 1))" "$@" "$here/grade-array.sbatch")"
array_job="${array_job%%;*}"  # --parsable prints jobid[;cluster]
merge_job="$(sbatch --parsable --export=ALL --dependency="afterok:$array_job" --kill-on-invalid-dep=yes "$@" "$here/merge.sbatch")"
merge_job="${merge_job%%;*}"
echo "grading: job array $array_job (shards 0-$((SHARDS - 1)) of $SHARDS); merge: job $merge_job, after all of them succeed"
