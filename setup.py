"""Build hook for the compiled chunker; everything else lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "coffer._chunker",
            sources=["src/coffer/_chunker.c"],
            extra_compile_args=["-O3"],
        )
    ]
)
