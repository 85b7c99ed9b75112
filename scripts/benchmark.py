"""`python scripts/benchmark.py ...` = `recurrent-transformer benchmark ...` (see its --help); runs from a checkout too,
e.g. under `accelerate launch scripts/benchmark.py ...`."""

import sys

from recurrent_transformer.cli import main

if __name__ == "__main__":
    main(["benchmark", *sys.argv[1:]])
