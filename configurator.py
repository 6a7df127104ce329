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


def apply_overrides(config, argv):
    """Apply a config file and --key=value args to `config` (a dict of defaults) in place."""
    defaults = {k: v for k, v in config.items() if not k.startswith("_") and isinstance(v, (int, float, bool, str, dict, list, tuple))}
    for arg in argv:
        if not arg.startswith("--"):
            # a config file: exec it in a scratch namespace, then check every name it set
            with open(arg) as f:
                source = f.read()
            namespace = {}
            exec(compile(source, arg, "exec"), namespace)
            for key, value in namespace.items():
                if key.startswith("_") or callable(value) or type(value).__name__ == "module":
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
