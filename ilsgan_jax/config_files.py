"""Loading one experiment config file from another (configs/ is a folder, not a package)."""

import importlib.util
import os
import types


def load_sibling_config(current_file: str, name: str) -> types.ModuleType:
    """The config module `name` (e.g. 'ilsgan.py') from the directory of `current_file`."""
    path = os.path.join(os.path.dirname(os.path.abspath(current_file)), name)
    spec = importlib.util.spec_from_file_location(f"{os.path.splitext(name)[0]}_base_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
