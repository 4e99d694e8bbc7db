#!/usr/bin/env bash
# One task of a scheduler's job array: grade the INDEX-th notebook (0-based, by file name) of a
# folder and write RESULTS/<notebook>.json. The same file runs unchanged under
#   Slurm       sbatch --array=0-$((N-1)) prunekit/grade/jobs/grade-array.sh SUBMISSIONS RESULTS [options]
#   Kubernetes  an Indexed Job (prunekit/grade/jobs/k8s-indexed-job.yaml): JOB_COMPLETION_INDEX
#   anything    TASK_INDEX=7 bash prunekit/grade/jobs/grade-array.sh SUBMISSIONS RESULTS [options]
# Before the array: python -m prunekit.grade.reference --cache-dir CACHE (expected values, once).
# After it:        python -m prunekit.grade.merge RESULTS --submissions SUBMISSIONS --gradebook grades.csv
# [options] go to python -m prunekit.grade (e.g. --exercise ex02_l1_norm --cache-dir CACHE).
#SBATCH --job-name=prunekit-grade
#SBATCH --cpus-per-task=1
#SBATCH --mem=6G
#SBATCH --time=00:30:00
#SBATCH --output=grade-%A_%a.log
set -euo pipefail
usage="usage: grade-array.sh SUBMISSIONS_DIR RESULTS_DIR [grader options]"
submissions=${1:?$usage}
results=${2:?$usage}
shift 2
index=${SLURM_ARRAY_TASK_ID:-${JOB_COMPLETION_INDEX:-${TASK_INDEX:?set SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or TASK_INDEX}}}
exec "${PYTHON:-python3}" -m prunekit.grade "$submissions" --task-index "$index" --json "$results" "$@"
