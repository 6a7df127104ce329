"""
Config handling for train.py, nanoGPT-style: the defaults are plain globals in
train.py; a config file (Python) is exec'd over them; then `--key=value`
arguments override single values.

    python train.py configs/tiny_student.py --max_iters=50 --device=cpu

Every key must already exist as a default (a typo is an error that lists the
valid keys) and a value must have the default's type (an int is fine where a
float is expected). Used as `apply_overrides(globals(), sys.argv[1:])`.
"""

import ast


class ConfigError(ValueError):
    pass


def _check_type(key, value, default):
    if default is None or isinstance(value, type(default)):
        if isinstance(default, bool) or not isinstance(value, bool):  # bool is an int; don't let True pass for 3
            return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{key} must be {type(default).__name__} (default {default!r}), got {value!r}")


def _unknown(key, valid):
    return ConfigError(f"unknown config key {key!r}; valid keys are: {', '.join(sorted(valid))}")


def read_config_file(path):
    """The names a config (or grid) file sets, imports left out: the file run as Python in a namespace of its own.
    (A grid may set functions, e.g. `include`; a train.py config may not.)"""
    with open(path) as f:
        source = f.read()
    namespace = {}
    exec(compile(source, path, "exec"), namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("_") and type(v).__name__ != "module"}


def apply_overrides(config, argv):
    """Apply a config file and --key=value args to `config` (a dict of defaults) in place."""
    defaults = {k: v for k, v in config.items() if not k.startswith("_") and isinstance(v, (int, float, bool, str, dict, list, tuple))}
    for arg in argv:
        if not arg.startswith("--"):
            # a config file: every name it sets must be a known key of the right type
            for key, value in read_config_file(arg).items():
                if callable(value):   # a helper function the file defines for itself
                    continue
                if key not in defaults:
                    raise _unknown(key, defaults)
                config[key] = _check_type(key, value, defaults[key])
        else:
            key, sep, text = arg[2:].partition("=")
            if not sep:
                raise ConfigError(f"expected --key=value, got {arg!r}")
            if key not in defaults:
                raise _unknown(key, defaults)
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare string such as --device=cpu
            config[key] = _check_type(key, value, defaults[key])
    return config
