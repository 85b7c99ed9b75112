"""`python scripts/compare.py ...` = `recurrent-transformer compare ...` (see its --help); runs from a checkout too,
e.g. under `accelerate launch scripts/compare.py ...`."""

import sys

from recurrent_transformer.cli import main

if __name__ == "__main__":
    main(["compare", *sys.argv[1:]])
