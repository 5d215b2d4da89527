"""onnx-train-pytorch-aml-deploy-mnist (MachineLearningNotebooks, deployment/onnx): train, list the
run's files, download the ONNX model with download_file, register it, list ws.models. The ACI
deployment cells are left out."""

# Cells of a notebook, in order: imports stay where the notebook has them.
# ruff: noqa: E402, F811, UP030

# Check core SDK version number
import trainhub.sdk

print("SDK version:", trainhub.sdk.VERSION)

# ----
from trainhub.sdk.workspace import Workspace

ws = Workspace.from_config()
print("Workspace name: " + ws.name, "Azure region: " + ws.location, "Resource group: " + ws.resource_group, sep="\n")

# ----
from trainhub.sdk.compute import AmlCompute, ComputeTarget
from trainhub.sdk.compute_target import ComputeTargetException

# choose a name for your cluster
cluster_name = "gpu-cluster"

try:
    compute_target = ComputeTarget(workspace=ws, name=cluster_name)
    print("Found existing compute target.")
except ComputeTargetException:
    print("Creating a new compute target...")
    compute_config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2", max_nodes=6)

    # create the cluster
    compute_target = ComputeTarget.create(ws, cluster_name, compute_config)

compute_target.wait_for_completion(show_output=True)

# Use the 'status' property to get a detailed status for the current cluster.
print(compute_target.status.serialize())

# ----
import os

project_folder = "./pytorch-mnist"
os.makedirs(project_folder, exist_ok=True)

# ----
import shutil

shutil.copy("mnist.py", project_folder)

# ----
from trainhub.sdk import Experiment

experiment_name = "pytorch1-mnist"
experiment = Experiment(ws, name=experiment_name)

# ----
from trainhub.sdk import Environment, ScriptRunConfig

pytorch_env = Environment.get(ws, name="TrainHub-acpt-pytorch-1.13-cuda11.7")

estimator = ScriptRunConfig(
    source_directory=project_folder, compute_target=compute_target, script="mnist.py", environment=pytorch_env
)

# ----
run = experiment.submit(estimator)
print(run.get_details())

# ----
run.wait_for_completion(show_output=True)

# ----
# list all the files from the run
print(run.get_file_names())

# ----
model_path = os.path.join("outputs", "mnist.onnx")
run.download_file(model_path, output_file_path=model_path)

# ----
model = run.register_model(model_name="mnist", model_path=model_path)
print(model.name, model.id, model.version, sep="\t")

# ----
models = ws.models
for name, m in models.items():
    print("Name:", name, "\tVersion:", m.version, "\tDescription:", m.description, m.tags)
