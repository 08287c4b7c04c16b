"""`python -m data_tools.ladder`: the quickstart ladder."""
from data_tools.ladder.run import main

if __name__ == "__main__":
    raise SystemExit(main())
