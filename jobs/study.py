"""``ray job submit --working-dir . -- python jobs/study.py --config configs/study-gpu.yaml``"""

import sys

from tanq_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
