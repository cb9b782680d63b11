"""``python -m duallora``: same as the ``duallora`` console script."""

from duallora.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
