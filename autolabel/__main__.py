"""``python -m autolabel``."""

from autolabel.cli import main

main()
