"""Programs kept between processes: the traced (exported) programs of exported_programs.py. The
directory comes from cli/compilation_cache.py; the library depends on nothing above jax."""
