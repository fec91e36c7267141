"""``ray job submit --working-dir . -- python jobs/segment.py --config configs/tiny.yaml``"""

import sys

from tanq_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
