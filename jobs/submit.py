"""Submit a job to a Ray cluster with this checkout's commit and user attached to its MLflow runs.

    python jobs/submit.py -- python jobs/sweep_distance.py --seeds 3
    python jobs/submit.py --address http://head:8265 -- python jobs/tune.py --space tune_spaces/protonet.yaml

``ray job submit --working-dir .`` runs the job in a copy of the code without ``.git``, so the job cannot see
which commit it is; this is ``ray job submit`` (any of its options may be given before ``--``; the working
directory defaults to this checkout) with ``FEWSHOT_GIT_COMMIT`` and ``FEWSHOT_USER`` added to the job's
runtime environment, which every run records as ``mlflow.source.git.commit`` and ``mlflow.user``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def submit_command(argv: list[str], commit: str, user: str) -> list[str]:
    """The ``ray job submit`` command line for ``argv`` (submit options, ``--``, the entry point), with the
    commit and user merged into any ``--runtime-env-json`` it gives."""
    if "--" not in argv:
        raise SystemExit("error: give the job after --, e.g. python jobs/submit.py -- python jobs/sweep_distance.py")
    cut = argv.index("--")
    options, entry = argv[:cut], argv[cut + 1 :]
    runtime_env: dict = {}
    if "--runtime-env-json" in options:
        at = options.index("--runtime-env-json")
        runtime_env = json.loads(options[at + 1])
        del options[at : at + 2]
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), "FEWSHOT_GIT_COMMIT": commit, "FEWSHOT_USER": user}
    if not any(option.startswith("--working-dir") for option in options):
        options = ["--working-dir", str(REPO), *options]
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    return [ray, "job", "submit", *options, "--runtime-env-json", json.dumps(runtime_env), "--", *entry]


def main() -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO)
    commit = head.stdout.strip()
    if head.returncode != 0 or not commit:
        raise SystemExit(f"error: {REPO} is not a git checkout, so there is no commit to record")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=REPO).stdout.strip()  # fmt: skip
    if dirty:
        print(f"warning: uncommitted changes; the runs record {commit[:7]}, not what runs", file=sys.stderr)
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"
    command = submit_command(sys.argv[1:], commit, user)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
