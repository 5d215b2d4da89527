"""train-hyperparameter-tune-deploy-with-pytorch (MachineLearningNotebooks, ml-frameworks/pytorch):
its training, HyperDrive, metrics, registration and ACI deployment cells (the service is a TrainHub
endpoint on the cluster). The RunDetails widget is left out, and the sweep has 4 children instead
of 8 (the test's cluster has one node)."""

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
cluster_name = "hd-cluster"

try:
    compute_target = ComputeTarget(workspace=ws, name=cluster_name)
    print("Found existing compute target.")
except ComputeTargetException:
    print("Creating a new compute target...")
    compute_config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2", max_nodes=4)

    # create the cluster
    compute_target = ComputeTarget.create(ws, cluster_name, compute_config)

compute_target.wait_for_completion(show_output=True)

# use get_status() to get a detailed status for the current cluster.
print(compute_target.get_status().serialize())

# ----
import os

project_folder = "./pytorch-birds"
os.makedirs(project_folder, exist_ok=True)

# ----
import shutil

shutil.copy("pytorch_train.py", project_folder)

# ----
from trainhub.sdk import Experiment

experiment_name = "pytorch-birds"
experiment = Experiment(ws, name=experiment_name)

# ----
from trainhub.sdk import Environment

pytorch_env = Environment.get(ws, name="TrainHub-acpt-pytorch-2.2-cuda12.1")

# ----
from trainhub.sdk import ScriptRunConfig

src = ScriptRunConfig(
    source_directory=project_folder,
    script="pytorch_train.py",
    arguments=["--num_epochs", 3, "--output_dir", "./outputs"],
    compute_target=compute_target,
    environment=pytorch_env,
)

# ----
run = experiment.submit(src)
print(run)

# ----
# to get more details of your run
print(run.get_details())

# ----
run.wait_for_completion(show_output=True)

# ----
from trainhub.sdk.train.hyperdrive import (
    BanditPolicy,
    HyperDriveConfig,
    PrimaryMetricGoal,
    RandomParameterSampling,
    uniform,
)

param_sampling = RandomParameterSampling({"learning_rate": uniform(0.0005, 0.005), "momentum": uniform(0.9, 0.99)})

early_termination_policy = BanditPolicy(slack_factor=0.15, evaluation_interval=1, delay_evaluation=10)

hyperdrive_config = HyperDriveConfig(
    run_config=src,
    hyperparameter_sampling=param_sampling,
    policy=early_termination_policy,
    primary_metric_name="best_val_acc",
    primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
    max_total_runs=4,
    max_concurrent_runs=4,
)

# ----
# start the HyperDrive run
hyperdrive_run = experiment.submit(hyperdrive_config)

# ----
hyperdrive_run.wait_for_completion(show_output=True)

# ----
assert hyperdrive_run.get_status() == "Completed"

# ----
best_run = hyperdrive_run.get_best_run_by_primary_metric()
best_run_metrics = best_run.get_metrics()
print(best_run)

# ----
print(
    "Best Run is:\n  Validation accuracy: {0:.5f} \n  Learning rate: {1:.5f} \n  Momentum: {2:.5f}".format(
        best_run_metrics["best_val_acc"][-1], best_run_metrics["lr"], best_run_metrics["momentum"]
    )
)

# ----
model = best_run.register_model(model_name="pytorch-birds", model_path="outputs/model.pt")
print(model.name, model.id, model.version, sep="\t")

# ----
from trainhub.sdk.model import InferenceConfig, Model
from trainhub.sdk.webservice import AciWebservice

inference_config = InferenceConfig(entry_script="pytorch_score.py", environment=pytorch_env)

aciconfig = AciWebservice.deploy_configuration(
    cpu_cores=2,
    memory_gb=2,
    tags={"data": "birds", "method": "transfer learning", "framework": "pytorch"},
    description="Classify turkey/chickens using transfer learning with PyTorch",
)

service = Model.deploy(
    workspace=ws, name="aci-birds", models=[model], inference_config=inference_config, deployment_config=aciconfig
)
service.wait_for_deployment(True)
print(service.state)

# ----
print(service.get_logs())

# ----
print(service.scoring_uri)

# ----
import json

import torch

input_data = torch.randn(1, 4)  # stands in for preprocess('test_img.jpg')
result = service.run(input_data=json.dumps({"data": input_data.tolist()}))
print(result)

# ----
service.delete()
