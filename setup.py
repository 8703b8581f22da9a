"""Compiler flags for the C extensions (declared in pyproject.toml) that depend on the compiler.

Every float64 operation in the extensions rounds on its own, so that their portable and vector builds and
``percept.model.pure_search`` give the same bits: GCC and clang (and MinGW) compile with -ffp-contract=off,
which keeps them from fusing a multiply and an add; MSVC with /fp:precise, which does not fuse them either.
"""

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: Flags per setuptools compiler type; every other type is a Unix-like GCC or clang.
FLAGS = {"msvc": ["/O2", "/fp:precise"]}
UNIX_FLAGS = ["-O3", "-ffp-contract=off"]


class BuildExt(build_ext):
    """build_ext with the flags of the compiler it found."""

    def build_extensions(self) -> None:
        flags = FLAGS.get(self.compiler.compiler_type, UNIX_FLAGS)
        for extension in self.extensions:
            extension.extra_compile_args = [*flags, *(extension.extra_compile_args or [])]
        super().build_extensions()


setup(cmdclass={"build_ext": BuildExt})
