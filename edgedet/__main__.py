"""``python -m edgedet`` is the ``edgedet`` command."""

from edgedet.cli import main

if __name__ == "__main__":
    main()
