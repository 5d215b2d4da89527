"""train-on-local (MachineLearningNotebooks, training): runs on the submitting machine
(ScriptRunConfig without a compute_target, which is compute_target="local"), tracked in the
workspace: a user-managed environment, then one built from CondaDependencies, a Docker one,
get_metrics, get_file_names and register_model. The scripts are Microsoft's own (scripts/)."""

# Cells of a notebook, in order: imports stay where the notebook has them.
# ruff: noqa: E402, F811, UP030, UP032, B018

# Check core SDK version number
import trainhub.sdk

print("SDK version:", trainhub.sdk.VERSION)

# ----
from trainhub.sdk.workspace import Workspace

ws = Workspace.from_config()
print(ws.name, ws.resource_group, ws.location, ws.subscription_id, sep="\n")

# ----
from trainhub.sdk import Experiment

experiment_name = "train-on-local"
exp = Experiment(workspace=ws, name=experiment_name)

# ----
with open("./scripts/train.py") as f:
    print(f.read())

# ----
with open("./scripts/mylib.py") as f:
    print(f.read())

# ----
from trainhub.sdk import Environment

# Editing a run configuration property on-fly.
user_managed_env = Environment("user-managed-env")

user_managed_env.python.user_managed_dependencies = True

# You can choose a specific Python environment by pointing to a Python path
# user_managed_env.python.interpreter_path = '/home/johndoe/miniconda3/envs/myenv/bin/python'

# ----
from trainhub.sdk import ScriptRunConfig

src = ScriptRunConfig(source_directory="./scripts", script="train.py", environment=user_managed_env)

# ----
run = exp.submit(src)

# ----
run

# ----
run.wait_for_completion(show_output=True)

# ----
from trainhub.sdk.conda_dependencies import CondaDependencies

system_managed_env = Environment("system-managed-env")

system_managed_env.python.user_managed_dependencies = False

# Specify conda dependencies with scikit-learn
cd = CondaDependencies.create(conda_packages=["scikit-learn"])
system_managed_env.python.conda_dependencies = cd

# ----
src.run_config.environment = system_managed_env
run = exp.submit(src)

# ----
run

# ----
run.wait_for_completion(show_output=True)

# ----
docker_env = Environment("docker-env")

docker_env.python.user_managed_dependencies = False
docker_env.docker.enabled = True

# use the default CPU-based Docker image from Azure ML
print(docker_env.docker.base_image)

# Specify conda dependencies with scikit-learn
docker_env.python.conda_dependencies = cd

# ----
src.run_config.environment = docker_env

# The notebook submits this where `docker system info` shows a Linux engine. TrainHub runs
# compute_target="local" in virtualenvs only: the submit is refused with the reason, whatever the
# engine (the test checks it).
docker_refusal = None
try:
    exp.submit(src)
except trainhub.sdk.exceptions.UserErrorException as refused:
    docker_refusal = str(refused)

# ----
# Get run history details
run

# ----
run.wait_for_completion(show_output=True)

# ----
# Get all metris logged in the run
run.get_metrics()
metrics = run.get_metrics()

# ----
import numpy as np

best_alpha = metrics["alpha"][np.argmin(metrics["mse"])]

print("When alpha is {1:0.2f}, we have min MSE {0:0.2f}.".format(min(metrics["mse"]), best_alpha))

# ----
run.get_file_names()

# ----
# Supply a model name, and the full path to the serialized model file.
model = run.register_model(model_name="best_ridge_model", model_path="./outputs/ridge_0.40.pkl")

# ----
print("Registered model:\n --> Name: {}\n --> Version: {}\n --> URL: {}".format(model.name, model.version, model.url))
