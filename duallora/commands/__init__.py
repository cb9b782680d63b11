"""Subcommands of ``duallora``. Each module has ``register(subparsers)``; add new ones here."""

COMMAND_MODULES: list[str] = [
    "duallora.commands.notebooks",
    "duallora.commands.demo",
    "duallora.commands.train",
    "duallora.commands.pretrain",
    "duallora.commands.flower_local",
    "duallora.commands.sweep",
]
