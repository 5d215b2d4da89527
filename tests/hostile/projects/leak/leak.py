"""A hostile training script: symlinks in outputs/ and logs/ to the server's secret key, database and data folder."""

import os
import sys

secret_key, database, data_dir = sys.argv[1:4]
os.makedirs("outputs/nested", exist_ok=True)
with open("outputs/model.pt", "wb") as model:
    model.write(b"honest weights")
os.symlink(secret_key, "outputs/secret_key")
os.symlink(database, "outputs/db.sqlite3")
os.symlink(data_dir, "outputs/data")
os.symlink("../../" * 20 + secret_key.lstrip("/"), "outputs/nested/relative_key")
os.symlink(secret_key, "logs/secret_key.txt")
print("links written", flush=True)
