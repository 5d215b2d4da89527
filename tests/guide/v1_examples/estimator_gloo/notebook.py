"""distributed-pytorch-with-nccl-gloo (MachineLearningNotebooks, ml-frameworks/pytorch/training,
the estimator edition): `PyTorch(..., node_count=2, distributed_training=Gloo(), use_gpu=True)`.
Its Nccl() cell is left out: the CPU build of torch has no NCCL (the script's init_process_group
says so); on GPU nodes it is the same calls with Nccl()."""

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

project_folder = "./pytorch-distr"
os.makedirs(project_folder, exist_ok=True)

# ----
import shutil

shutil.copy("pytorch_mnist.py", project_folder)

# ----
from trainhub.sdk import Experiment

experiment_name = "pytorch-distr"
experiment = Experiment(ws, name=experiment_name)

# ----
from trainhub.sdk.train.dnn import Gloo, PyTorch

estimator = PyTorch(
    source_directory=project_folder,
    script_params={
        "--dist-backend": "gloo",
        "--dist-url": "$AZ_BATCHAI_PYTORCH_INIT_METHOD",
        "--rank": "$AZ_BATCHAI_TASK_INDEX",
        "--world-size": 2,
    },
    compute_target=compute_target,
    entry_script="pytorch_mnist.py",
    node_count=2,
    distributed_training=Gloo(),
    use_gpu=True,
)

# ----
run = experiment.submit(estimator)
print(run)

# ----
run.wait_for_completion(show_output=True)  # this provides a verbose log
