"""The one compiled part: an optional accelerator for plugin route calls (see
modula_desktop/core/plugins/runtime/_luabridge.c). Without a C compiler the install still succeeds and the
sandbox calls routes through lupa alone."""
from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "modula_desktop.core.plugins.runtime._luabridge",
    ["modula_desktop/core/plugins/runtime/_luabridge.c"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
    optional=True,
)])
