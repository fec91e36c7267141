"""``ray job submit --working-dir . -- python jobs/translate.py --config configs/tiny.yaml``"""

import sys

from tanq_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["translate", *sys.argv[1:]]))
