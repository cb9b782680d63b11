"""``python -m data_prep``: phantoms and harmonization."""

from data_prep.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
