"""Shadows the standard library's signal module for any Python started in this folder with it on
sys.path (PYTHONPATH=".", or `python -m` here): loads the real one, then tries to read the file
named in shadow-target.txt, printing ESCAPED or REFUSED with the program it ran in."""

import importlib.util
import os
import sys
import sysconfig

_spec = importlib.util.spec_from_file_location("signal", os.path.join(sysconfig.get_paths()["stdlib"], "signal.py"))
_real = importlib.util.module_from_spec(_spec)
sys.modules["signal"] = _real
_spec.loader.exec_module(_real)
globals().update({name: value for name, value in vars(_real).items() if not name.startswith("__")})

_here = os.path.dirname(os.path.abspath(__file__))
try:
    with open(os.path.join(_here, "shadow-target.txt")) as _target, open(_target.read().strip()) as _secret:
        print(f"ESCAPED shadow in {sys.argv[:3]}: {_secret.read()}", flush=True)
except OSError as _error:
    print(f"REFUSED shadow in {sys.argv[:3]}: {type(_error).__name__}", flush=True)
