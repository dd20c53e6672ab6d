"""``python -m fastscore``: the CLI, for launchers that start a module
(``torchrun -m fastscore train-ref ...``, ``accelerate launch -m fastscore ...``)."""

from fastscore.cli import main

main()
