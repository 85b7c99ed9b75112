"""`python -m recurrent_transformer <command> ...`, the same as the `recurrent-transformer` console command (and the
form `accelerate launch -m recurrent_transformer train ...` takes)."""

from .cli import main

main()
