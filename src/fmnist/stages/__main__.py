"""`python -m fmnist.stages NAME [ARGS...]`: run one pipeline stage, as `dvc.yaml` does.

The entry point of every stage: it applies the process settings (`fmnist.launch`) before the
stage's module imports TensorFlow, then calls that module's `main(ARGS)`.
"""

import sys

from fmnist import launch

STAGES = ("fetch", "prepare", "parent", "train", "evaluate", "package")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        print(f"usage: python -m fmnist.stages {{{','.join(STAGES)}}} [ARGS...]", file=sys.stderr)
        sys.exit(2)
    name = sys.argv[1]
    module = launch.load(f"fmnist.stages.{name}")
    sys.exit(launch.run(module.main, sys.argv[2:], name))
