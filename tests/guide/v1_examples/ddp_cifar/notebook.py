"""distributed-pytorch-with-distributeddataparallel (MachineLearningNotebooks,
ml-frameworks/pytorch): CIFAR-10 uploaded with Dataset.File.upload_directory and handed to a
per-process DDP run as_download(); then the notebook's other option, the per-node launch with
torch.distributed.launch given as a command list."""

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
# The notebook downloads and extracts cifar-10-python.tar.gz here; a few synthetic batches in the
# same layout (cifar-10/cifar-10-batches-py/...) stand in for it.
import os

import torch

data_root = "cifar-10"

if not os.path.isdir(data_root):
    os.makedirs(os.path.join(data_root, "cifar-10-batches-py"), exist_ok=True)
    for batch in range(1, 3):
        torch.save(torch.randn(16, 8), os.path.join(data_root, "cifar-10-batches-py", f"data_batch_{batch}"))

# ----
from trainhub.sdk import Dataset

datastore = ws.get_default_datastore()
dataset = Dataset.File.upload_directory(src_dir=data_root, target=(datastore, data_root))

# ----
project_folder = "./pytorch-distr"
os.makedirs(project_folder, exist_ok=True)

# ----
import shutil

shutil.copy("train.py", project_folder)

# ----
from trainhub.sdk import Experiment

experiment_name = "pytorch-distr"
experiment = Experiment(ws, name=experiment_name)

# ----
from trainhub.sdk import Environment

pytorch_env = Environment.get(ws, name="azureml-acpt-pytorch-2.2-cuda12.1")

# ----
from trainhub.sdk import ScriptRunConfig
from trainhub.sdk.runconfig import PyTorchConfiguration

# create distributed config
distr_config = PyTorchConfiguration(process_count=2, node_count=2)

# create args
args = ["--data-dir", dataset.as_download(), "--epochs", 2]

# create job config
src = ScriptRunConfig(
    source_directory=project_folder,
    script="train.py",
    arguments=args,
    compute_target=compute_target,
    environment=pytorch_env,
    distributed_job_config=distr_config,
)

# ----
run = experiment.submit(src)
print(run)

# ----
run.wait_for_completion(show_output=True)  # this provides a verbose log

# ----
# The notebook's second option (a commented-out cell there): one launcher per node.
from trainhub.sdk import ScriptRunConfig
from trainhub.sdk.runconfig import PyTorchConfiguration

# create distributed config
distr_config = PyTorchConfiguration(node_count=2)

# define command
launch_cmd = [
    "python -m torch.distributed.launch --nproc_per_node 1 --nnodes 2 "
    "--node_rank $NODE_RANK --master_addr $MASTER_ADDR --master_port $MASTER_PORT --use_env "
    "train.py --data-dir",
    dataset.as_download(),
    "--epochs 2",
]

# create job config
src = ScriptRunConfig(
    source_directory=project_folder,
    command=launch_cmd,
    compute_target=compute_target,
    environment=pytorch_env,
    distributed_job_config=distr_config,
)

# ----
per_node_run = experiment.submit(src)
print(per_node_run)
per_node_run.wait_for_completion(show_output=True)
