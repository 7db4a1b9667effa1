"""The faces of tmbmerge to the outside world: the command line, the catalogue backends and
hooks."""
