"""``ray job submit --working-dir . -- python jobs/sweep.py --config configs/tiny.yaml sweep.rows=[cut,tanq]``"""

import sys

from tanq_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
