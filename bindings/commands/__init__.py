"""Subcommands of the ``tmbmerge`` command line, one module per command (or command group).

Each module defines ``register(subparsers)``, which adds its parser(s) and sets
``func=run_function`` as the parser default; the run function takes the parsed arguments and
returns an exit code.  Modules import the heavy parts of the engine inside their run
functions, so ``tmbmerge --help`` stays fast.
"""

# Order is the order shown by ``tmbmerge --help``.
COMMAND_MODULES = [
    "bindings.commands.generate",
    "bindings.commands.inspect",
    "bindings.commands.merge",
    "bindings.commands.catalog",
    "bindings.commands.bench",
    "bindings.commands.certify",
    "bindings.commands.serve",
]
