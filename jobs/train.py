"""``ray job submit --working-dir . -- python jobs/train.py --config configs/tiny.yaml model=tanq``"""

import sys

from tanq_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
