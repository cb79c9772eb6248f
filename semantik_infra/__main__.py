"""`python -m semantik_infra TASK …`: the same as the `semantik-infra` console script."""

from semantik_infra.cli import main

main()
