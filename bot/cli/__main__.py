"""`python -m bot.cli`: the console script `gatehouse`."""

from bot.cli.main import main

main()
