"""distributed-pytorch-with-horovod (MachineLearningNotebooks, ml-frameworks/pytorch): an MPI
launch on two nodes with MpiConfiguration."""

# Cells of a notebook, in order: imports stay where the notebook has them.
# ruff: noqa: E402, F811, UP030

# Check core SDK version number
import trainhub.sdk

print("SDK version:", trainhub.sdk.VERSION)

# ----
from trainhub.sdk.workspace import Workspace

ws = Workspace.from_config()
print(
    "Workspace name: " + ws.name,
    "Azure region: " + ws.location,
    "Subscription id: " + ws.subscription_id,
    "Resource group: " + ws.resource_group,
    sep="\n",
)

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
    compute_config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2", max_nodes=4)

    # create the cluster
    compute_target = ComputeTarget.create(ws, cluster_name, compute_config)

    compute_target.wait_for_completion(show_output=True)

# use get_status() to get a detailed status for the current AmlCompute.
print(compute_target.get_status().serialize())

# ----
import os

project_folder = "./pytorch-distr-hvd"
os.makedirs(project_folder, exist_ok=True)

# ----
import shutil

shutil.copy("pytorch_horovod_mnist.py", project_folder)

# ----
from trainhub.sdk import Experiment

experiment_name = "pytorch-distr-hvd"
experiment = Experiment(ws, name=experiment_name)

# ----
from trainhub.sdk import Environment

pytorch_env = Environment.get(ws, name="TrainHub-acpt-pytorch-1.13-cuda11.7")

# ----
from trainhub.sdk import ScriptRunConfig
from trainhub.sdk.runconfig import MpiConfiguration

src = ScriptRunConfig(
    source_directory=project_folder,
    script="pytorch_horovod_mnist.py",
    compute_target=compute_target,
    environment=pytorch_env,
    distributed_job_config=MpiConfiguration(node_count=2),
)

# ----
run = experiment.submit(src)
print(run)

# ----
run.wait_for_completion(show_output=True)  # this provides a verbose log
