"""``python -m headstart``: the ``headstart`` command."""

from headstart.cli import main

if __name__ == "__main__":
    main()
