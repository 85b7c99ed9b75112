"""`python scripts/train.py ...` = `recurrent-transformer train ...` (see its --help); runs from a checkout too,
e.g. under `accelerate launch scripts/train.py ...`."""

import sys

from recurrent_transformer.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
