"""A hostile training script: reads the server's secrets and other people's files, copies them
into outputs/, and plants files where the server would load them.

Each argument is `read:NAME=PATH` (a file, or a folder whose files it copies into outputs/NAME)
or `write:NAME=FOLDER`; every attempt prints one line, ESCAPED or REFUSED, into the run's log.
"""

import os
import shutil
import sys

# What the run is given: its own folder, its environment and the in-run SDK.
given = {os.getcwd(), sys.prefix, *sys.path}


def files_under(folder):
    """Every file under `folder` the script can open, but those it is given."""
    found = []
    for parent, folders, names in os.walk(folder, onerror=lambda error: None):
        folders[:] = [name for name in folders if os.path.join(parent, name) not in given]
        found += [os.path.join(parent, name) for name in names]
    return found


os.makedirs("outputs", exist_ok=True)
with open("outputs/model.pt", "wb") as model:
    model.write(b"honest weights")
for argument in sys.argv[1:]:
    action, rest = argument.split(":", 1)
    name, path = rest.split("=", 1)
    try:
        if action == "write":
            with open(os.path.join(path, "planted.pth"), "w") as handle:
                handle.write("import os\n")
            print(f"ESCAPED {name}: wrote into {path}", flush=True)
        elif os.path.isdir(path):
            found = files_under(path)
            for number, source in enumerate(found):
                os.makedirs(f"outputs/{name}", exist_ok=True)
                shutil.copyfile(source, f"outputs/{name}/{number}")
            if not found:
                raise FileNotFoundError(2, f"no file visible under {path}")
            print(f"ESCAPED {name}: copied {found}", flush=True)
        else:
            shutil.copyfile(path, f"outputs/{name}")
            print(f"ESCAPED {name}: copied {os.path.getsize(path)} bytes", flush=True)
    except OSError as error:
        print(f"REFUSED {name}: {type(error).__name__}: {error.strerror}", flush=True)
print("snooping done", flush=True)
