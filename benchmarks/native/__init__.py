"""The native driver for the benchmark scripts: it lives in `loadtest.native` (shipped with
`livemart loadtest --driver native`); this name keeps the scripts' `import native`."""

from loadtest.native import READY, SOURCE, BuildError, Listener, binary, build, command, compiler, result_of

__all__ = ["READY", "SOURCE", "BuildError", "Listener", "binary", "build", "command", "compiler", "result_of"]
