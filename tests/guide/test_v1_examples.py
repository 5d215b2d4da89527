"""Microsoft's published v1 PyTorch examples, converted with the porting rule (tests/guide/v1_examples/,
its README says how), run on a live TrainHub with real nodes: each notebook's cells in order, then
what the notebook shows checked as the user would see it.

Examples of the two repositories that do not run here, and why, are in docs/porting.md's table;
train-on-local runs on the submitting machine (compute_target="local").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from runs.local_execution import USER_MANAGED_PYTHON
from tests.helpers.site import module_site

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parent / "v1_examples"
RULE = ("azureml.core", "azureml.train.dnn", "azureml.train.hyperdrive", "AzureML-")
# Each example's notebook finds these clusters (the try: ComputeTarget(...) branch) with these nodes.
CLUSTERS = {"gpu-cluster": 2, "hd-cluster": 1, "cpu-cluster": 1}


@pytest.fixture(scope="module")
def site(django_db_blocker, live_server_process, tmp_path_factory):
    folder = tmp_path_factory.mktemp("v1-examples")
    with module_site(django_db_blocker, live_server_process, folder) as site:
        site.write_config(folder)
        from trainhub.sdk import ComputeTarget, Workspace
        from trainhub.sdk.compute import AmlCompute

        ws = Workspace.get("birds", url=site.url, token=site.token)
        for name in CLUSTERS:
            ComputeTarget.create(ws, name, AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2"))
        site.start_cluster_nodes(CLUSTERS)
        yield site, folder


def run_notebook(site, name: str, tmp_path: Path, monkeypatch) -> dict:
    """Copy the example into a fresh folder with the workspace's config.json, run its cells there."""
    _, config_folder = site
    work = tmp_path / name
    shutil.copytree(EXAMPLES / name, work)
    shutil.copy(config_folder / "config.json", work)
    monkeypatch.chdir(work)
    code = (work / "notebook.py").read_text()
    assert not any(old in code for old in RULE), "the conversion left a cloud name"
    namespace: dict = {"__name__": f"v1_example_{name}", "__file__": str(work / "notebook.py")}
    exec(compile(code, str(EXAMPLES / name / "notebook.py"), "exec"), namespace)
    return namespace


def assert_first_cells(shown: str, live_url: str) -> None:
    import trainhub.sdk

    assert f"SDK version: {trainhub.sdk.VERSION}" in shown
    assert f"Azure region: local\nSubscription id: {live_url}\nResource group: olivia" in shown


def test_each_example_holds_the_files_its_notebook_uses(db):
    for folder in sorted(path for path in EXAMPLES.iterdir() if path.is_dir()):
        code = (folder / "notebook.py").read_text()
        copied = re.findall(r"(?:shutil\.copy|joinpath|open)\(\"(?:\./)?([^\"]+)\"", code)
        assert copied, folder.name
        for name in copied:
            assert (folder / name).exists(), (folder.name, name)


def test_hyperparameter_tune_deploy_trains_logs_registers_and_deploys(site, tmp_path, monkeypatch, capsys):
    namespace = run_notebook(site, "birds_single_node", tmp_path, monkeypatch)
    shown = capsys.readouterr().out
    assert_first_cells(shown, site[0].url)
    assert "Found existing compute target." in shown
    assert "'allocationState': 'Steady'" in shown and "'currentNodeCount': 1" in shown
    assert "Status: Completed" in shown and "Epoch 2 loss" in shown
    assert namespace["run"].get_details()["environment"]["name"] == "TrainHub-PyTorch-2.13"
    # The HyperDrive cells: four children of uniform learning rates and momentums, each shown
    # starting and ending with its best_val_acc; the best of them is the one registered.
    hyperdrive_run = namespace["hyperdrive_run"]
    children = hyperdrive_run.get_children_sorted_by_primary_metric()
    assert len(children) == 4 and {child["status"] for child in children} == {"Completed"}
    for child in children:
        assert 0.0005 <= child["hyperparameters"]["learning_rate"] <= 0.005
        assert 0.9 <= child["hyperparameters"]["momentum"] <= 0.99
        assert f"({child['run_id']}) ended Completed: best_val_acc {child['best_primary_metric']:.6g}" in shown
    assert len(re.findall(r"Child \d \(\S+\) started: learning_rate=0\.\d+ momentum=0\.9\d*", shown)) == 4
    best = children[0]
    assert namespace["best_run"].id == best["run_id"]
    accuracy, lr, momentum = (
        best["best_primary_metric"],
        *map(best["hyperparameters"].get, ("learning_rate", "momentum")),
    )
    assert f"Validation accuracy: {accuracy:.5f} \n  Learning rate: {lr:.5f} \n  Momentum: {momentum:.5f}" in shown
    assert re.search(r"pytorch-birds\tpytorch-birds:1\t1", shown)
    assert namespace["model"].run_id == best["run_id"]
    # The deployment cells: the best run's model answers as an endpoint on the cluster, then is deleted.
    assert "AciWebservice.deploy_configuration(cpu_cores=2, memory_gb=2) is served as a TrainHub endpoint" in shown
    assert 'ACI service creation operation finished, operation "Healthy"' in shown and "\nHealthy\n" in shown
    assert f"{site[0].url}/endpoints/birds/aci-birds/score\n" in shown
    result = namespace["result"]
    assert result["label"] in ("chicken", "turkey") and 0.5 <= float(result["probability"]) <= 1.0
    assert f"{result}\n" in shown
    from trainhub.sdk.webservice import Webservice

    assert Webservice.list(namespace["ws"]) == []


def test_distributed_data_parallel_reads_the_uploaded_dataset_per_process_and_per_node(
    site, tmp_path, monkeypatch, capsys
):
    namespace = run_notebook(site, "ddp_cifar", tmp_path, monkeypatch)
    shown = capsys.readouterr().out
    assert_first_cells(shown, site[0].url)
    # The folder's contents are at --data-dir (cifar-10-batches-py/…), not cifar-10/ inside it.
    assert len(re.findall(r"rank \d/2 reads cifar-10-batches-py: data_batch_1 data_batch_2", shown)) == 4
    assert shown.count("Status: Completed") == 2
    for run in (namespace["run"], namespace["per_node_run"]):
        run.download_file("outputs/result.json", "result.json")
        assert json.loads(Path("result.json").read_text()) == {"world_size": 2, "files_seen": 4.0}
    assert namespace["per_node_run"].get_details()["command"][:3] == ["python", "-m", "torch.distributed.launch"]


def test_horovod_example_runs_under_mpirun_on_two_nodes_and_horovod_itself_is_refused_saying_why(
    site, tmp_path, monkeypatch, capsys
):
    from trainhub.environments.builders import CANNOT_BUILD
    from trainhub.sdk.exceptions import RunFailedError

    namespace = run_notebook(site, "horovod_mpi", tmp_path, monkeypatch)
    shown = capsys.readouterr().out
    assert "Status: Completed" in shown
    assert sorted(re.findall(r"horovod-style rank (\d)/2 averaged gradient 1.5", shown)) == ["0", "1"]

    # The cloud's curated environment holds Horovod; asking for it here fails at once, saying why.
    with_horovod = namespace["pytorch_env"].clone("pytorch-horovod")
    with_horovod.python.conda_dependencies.add_pip_package("horovod")
    namespace["src"].run_config.environment = with_horovod
    run = namespace["experiment"].submit(namespace["src"])
    with pytest.raises(RunFailedError) as failure:
        run.wait_for_completion()
    reason = run.get_details()["status_reason"]
    assert reason == "Environment build failed: " + CANNOT_BUILD["horovod"][1].format(
        release="0.28.1", torch="2.13.0+cpu"
    )
    assert "C++14, which the headers of torch 2.13.0+cpu refuse" in str(failure.value)
    assert len(str(failure.value)) < 2000  # the reason, not a compiler log


def test_the_gloo_estimator_runs_two_ranks_on_cpu_and_says_so(site, tmp_path, monkeypatch, capsys):
    if any(entry.startswith("nvidia") for entry in os.listdir("/dev")):
        pytest.skip("this machine has a GPU: use_gpu=True is honoured and the warning does not apply")
    run_notebook(site, "estimator_gloo", tmp_path, monkeypatch)
    shown = capsys.readouterr().out
    assert "Status: Completed" in shown
    assert sorted(re.findall(r"rank (\d)/2 gloo epoch 1 loss", shown)) == ["0", "1"]
    assert "WARNING: use_gpu=True asks for a GPU, but compute target 'gpu-cluster'" in shown


def test_onnx_example_downloads_registers_and_lists_the_model(site, tmp_path, monkeypatch, capsys):
    import onnx

    namespace = run_notebook(site, "onnx_mnist", tmp_path, monkeypatch)
    shown = capsys.readouterr().out
    assert "Status: Completed" in shown and "exported outputs/mnist.onnx" in shown
    assert "'outputs/mnist.onnx'" in shown  # get_file_names()
    onnx.checker.check_model(onnx.load("outputs/mnist.onnx"))
    assert "mnist\tmnist:1\t1" in shown
    assert re.search(r"Name: mnist \tVersion: 1 \tDescription: ", shown)
    assert namespace["model"].files[0]["path"] == "mnist.onnx"


def test_train_on_amlcompute_builds_the_conda_environment_and_manages_the_cluster(site, tmp_path, monkeypatch, capsys):
    namespace = run_notebook(site, "train_on_amlcompute", tmp_path, monkeypatch)
    shown = capsys.readouterr().out
    assert "Found existing cluster, use it." in shown
    assert shown.count("Status: Completed") == 2
    assert "alpha is 0.75, and mse is" in shown
    metrics = namespace["run"].get_metrics()
    assert metrics["alpha"] == [0.0, 0.25, 0.5, 0.75] and len(metrics["mse"]) == 4
    assert "'nodeIdleTimeBeforeScaleDown': 'PT1800S'" in shown
    assert namespace["cpu_cluster"].get_status().scale_settings["nodeIdleTimeBeforeScaleDown"] == "PT300S"
    assert "'state': 'idle'" in shown  # list_nodes()


def test_mnist_builds_its_python_3_6_conda_file_on_the_nodes_python_and_logs_its_model_with_mlflow(
    site, tmp_path, monkeypatch, capsys
):
    with pytest.warns(UserWarning, match="left out azureml-mlflow, azureml-dataprep: the cloud SDK's packages"):
        namespace = run_notebook(site, "mnist", tmp_path, monkeypatch)
    shown = capsys.readouterr().out
    own = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert "WARNING: the environment asks for Python 3.6, which node " in shown
    assert f"building it on the node's Python {own} instead" in shown
    assert "torch: 'torch' is installed as 'torch==2.13.0+cpu'" in shown
    assert "is a CUDA build: its compiled operators need libtorch_cuda" in shown  # the torchvision it got
    assert "Train Epoch: 2\tLoss: " in shown and "logged the model with mlflow" in shown
    assert "Status: Completed" in shown
    assert "outputs/model/MLmodel" in namespace["run"].get_file_names()


def test_train_on_local_runs_on_the_submitting_machine_in_its_box_tracked_in_the_workspace(
    site, tmp_path, tmp_path_factory, monkeypatch, capsys
):
    monkeypatch.setenv("TRAINHUB_LOCAL_RUNNER_DIR", str(tmp_path_factory.mktemp("local-runner")))
    namespace = run_notebook(site, "train_on_local", tmp_path, monkeypatch)
    shown = capsys.readouterr().out
    assert f"birds\nolivia\nlocal\n{site[0].url}\n" in shown  # name, resource group, location, subscription
    # The user-managed environment runs with the submitting Python as it is (this test's .venv, where
    # scikit-learn is installed), nothing built, as on Azure; the next one is built from its packages.
    first = min(namespace["exp"].get_runs(), key=lambda found: found.number)
    assert first.get_details()["status"] == "Completed" and first.get_environment().python.user_managed_dependencies
    assert USER_MANAGED_PYTHON.format(name="user-managed-env", python=sys.executable) in shown
    assert shown.count("alpha is 0.95, and mse is") >= 2
    assert len(first.get_metrics()["alpha"]) == 20
    assert "compute_target='local' runs virtualenv environments only" in namespace["docker_refusal"]
    run = namespace["run"]
    details = run.get_details()
    assert details["status"] == "Completed" and details["compute_target"] == "local"
    assert {p["node_name"] for p in details["processes"]} == {"the submitting machine"}
    assert "alpha is 0.95, and mse is" in shown  # the script's lines, followed live
    assert "Processes run in a box" in shown
    metrics = namespace["metrics"]
    assert len(metrics["alpha"]) == 20 and len(metrics["mse"]) == 20
    assert "When alpha is 0.40, we have min MSE" in shown
    names = run.get_file_names()
    assert "outputs/ridge_0.40.pkl" in names and "logs/std_log_process_0.txt" in names
    assert namespace["model"].version == 1
    assert "--> Name: best_ridge_model" in shown
