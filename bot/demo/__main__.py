"""`python -m bot.demo` (`make demo`)."""

from bot.demo.launch import main

main()
