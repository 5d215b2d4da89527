"""train-on-amlcompute (MachineLearningNotebooks, training): an environment from
CondaDependencies, DockerConfiguration, submit, get_metrics, resubmit through
src.run_config.target, then the cluster's get_status, list_nodes and update."""

# Cells of a notebook, in order: imports stay where the notebook has them.
# ruff: noqa: E402, F811, UP030

# Check core SDK version number
import trainhub.sdk

print("SDK version:", trainhub.sdk.VERSION)

# ----
from trainhub.sdk import Workspace

ws = Workspace.from_config()
print(ws.name, ws.resource_group, ws.location, ws.subscription_id, sep="\n")

# ----
from trainhub.sdk import Experiment

experiment_name = "train-on-amlcompute"
experiment = Experiment(workspace=ws, name=experiment_name)

# ----
from trainhub.sdk.compute import AmlCompute, ComputeTarget

print(AmlCompute.supported_vmsizes(workspace=ws))

# ----
import os
import shutil

project_folder = "./train-on-amlcompute"
os.makedirs(project_folder, exist_ok=True)
shutil.copy("train.py", project_folder)

# ----
from trainhub.sdk import Environment
from trainhub.sdk.conda_dependencies import CondaDependencies
from trainhub.sdk.runconfig import DockerConfiguration

myenv = Environment("myenv")
myenv.python.conda_dependencies = CondaDependencies.create(conda_packages=["scikit-learn", "packaging"])

# Enable Docker
docker_config = DockerConfiguration(use_docker=True)

# ----
from trainhub.sdk.compute import AmlCompute, ComputeTarget
from trainhub.sdk.compute_target import ComputeTargetException

# Choose a name for your CPU cluster
cpu_cluster_name = "cpu-cluster"

# Verify that cluster does not exist already
try:
    cpu_cluster = ComputeTarget(workspace=ws, name=cpu_cluster_name)
    print("Found existing cluster, use it.")
except ComputeTargetException:
    compute_config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2", max_nodes=4)
    cpu_cluster = ComputeTarget.create(ws, cpu_cluster_name, compute_config)

cpu_cluster.wait_for_completion(show_output=True)

# ----
from trainhub.sdk import ScriptRunConfig

src = ScriptRunConfig(
    source_directory=project_folder,
    script="train.py",
    compute_target=cpu_cluster,
    environment=myenv,
    docker_runtime_config=docker_config,
)

run = experiment.submit(config=src)
print(run)

# ----
# Shows output of the run on stdout.
run.wait_for_completion(show_output=True)

# ----
print(run.get_metrics())

# ----
# Set compute target to the one created in previous step
src.run_config.target = cpu_cluster

run = experiment.submit(config=src)
print(run)

# ----
# Shows output of the run on stdout.
run.wait_for_completion(show_output=True)

# ----
print(run.get_metrics())

# ----
# get_status () gets the latest status of the AmlCompute target
print(cpu_cluster.get_status().serialize())

# ----
# list_nodes () gets the list of nodes on the cluster with status, IP and associated run
print(cpu_cluster.list_nodes())

# ----
# Update () takes in the min_nodes, max_nodes and idle_seconds_before_scaledown and updates the AmlCompute target
cpu_cluster.update(idle_seconds_before_scaledown=300)
