"""The cloud SDK's v1 names that Microsoft's published PyTorch examples call, against a live server:
what each answers, and the clear error for what TrainHub does not do (issue 23)."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import traceback
import warnings

import pytest

from tests.conftest import issue_token
from trainhub.sdk import Dataset, Environment, Experiment, ScriptRunConfig, Workspace, exceptions
from trainhub.sdk.compute import AmlCompute, ComputeTarget
from trainhub.sdk.runconfig import PyTorchConfiguration

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ws(live_url, workspace, owner, owner_token):
    from trainhub.environments.services import seed_demo

    seed_demo(workspace=workspace, user=owner)
    return Workspace.get("birds", url=live_url, token=owner_token)


def test_version_is_the_installed_package_version():
    import trainhub.sdk

    assert trainhub.sdk.VERSION == importlib.metadata.version("trainhub")


def test_the_first_cell_of_every_notebook_prints_honest_values(ws, live_url):
    assert ws.location == "local"  # TRAINHUB_REGION's default
    assert ws.subscription_id == live_url
    assert ws.resource_group == "olivia"
    print(
        "Workspace name: " + ws.name,
        "Azure region: " + ws.location,
        "Subscription id: " + ws.subscription_id,
        "Resource group: " + ws.resource_group,
        sep="\n",
    )


def test_the_collections_of_a_workspace(ws, tmp_path):
    from trainhub.sdk import ComputeTarget, Model
    from trainhub.sdk.compute import AmlCompute

    ComputeTarget.create(ws, "cpu-cluster", AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2"))
    (tmp_path / "model.pt").write_bytes(b"weights")
    Model.register(ws, model_path=str(tmp_path / "model.pt"), model_name="birds", show_progress=False)
    Model.register(ws, model_path=str(tmp_path / "model.pt"), model_name="birds", show_progress=False)

    assert list(ws.compute_targets) == ["cpu-cluster"]
    assert ws.compute_targets["cpu-cluster"].vm_size == "STANDARD_D2_V2"
    assert ws.models["birds"].version == 2
    assert {"TrainHub-PyTorch-2.13", "TrainHub-PyTorch-2.13-CPU"} <= set(ws.environments)
    assert list(ws.datastores) == ["workspaceblobstore"]
    assert ws.experiments == {}


def test_get_status_of_a_cluster_serializes_as_the_notebooks_print_it(ws):
    from trainhub.sdk import ComputeTarget
    from trainhub.sdk.compute import AmlCompute
    from trainhub.sdk.exceptions import ComputeTargetException

    config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2", min_nodes=1, max_nodes=3)
    target = ComputeTarget.create(ws, "cpu-cluster", config)
    status = target.get_status()
    # min_nodes=1 and no node has started yet: the cluster is heading for one node.
    assert (status.current_node_count, status.target_node_count, status.preparing_node_count) == (0, 1, 1)
    assert status.allocation_state == "Resizing"
    serialized = target.status.serialize()
    assert serialized["nodeStateCounts"] == {
        "idleNodeCount": 0,
        "runningNodeCount": 0,
        "preparingNodeCount": 1,
        "leavingNodeCount": 0,
        "unusableNodeCount": 0,
        "preemptedNodeCount": 0,
    }
    assert serialized["scaleSettings"] == {
        "minNodeCount": 1,
        "maxNodeCount": 3,
        "nodeIdleTimeBeforeScaleDown": "PT1800S",
    }
    assert (serialized["vmSize"], serialized["provisioningState"]) == ("STANDARD_D2_V2", "Succeeded")
    assert target.list_nodes() == []

    target.update(idle_seconds_before_scaledown="300")  # train-on-amlcompute passes a string
    target.update(max_nodes=4)
    assert target.get_status().scale_settings == {
        "minNodeCount": 1,
        "maxNodeCount": 4,
        "nodeIdleTimeBeforeScaleDown": "PT300S",
    }
    with pytest.raises(ComputeTargetException, match="min_nodes \\(5\\) must be at most max_nodes \\(4\\)"):
        target.update(min_nodes=5)


def test_delete_removes_a_cluster_and_readers_and_outsiders_cannot(
    ws, workspace, reader, outsider, other_workspace, live_url
):
    from trainhub.sdk import ComputeTarget
    from trainhub.sdk.compute import AmlCompute
    from trainhub.sdk.exceptions import ComputeTargetException

    target = ComputeTarget.create(ws, "cpu-cluster", AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2"))
    as_reader = ComputeTarget(Workspace.get("birds", url=live_url, token=issue_token(workspace, reader)), "cpu-cluster")
    with pytest.raises(exceptions.PermissionDeniedError, match="reader"):
        as_reader.delete()
    outsider_ws = Workspace.get(other_workspace.name, url=live_url, token=issue_token(other_workspace, outsider))
    with pytest.raises(exceptions.NotFoundError):
        outsider_ws._http.delete("workspaces/birds/computes/cpu-cluster")
    assert list(ws.compute_targets) == ["cpu-cluster"]

    target.delete()
    assert ws.compute_targets == {}
    with pytest.raises(ComputeTargetException, match="ComputeTargetNotFound"):
        ComputeTarget(workspace=ws, name="cpu-cluster")


def test_a_cluster_runs_were_made_on_is_kept(ws, tmp_path):
    from trainhub.sdk import ComputeTarget
    from trainhub.sdk.compute import AmlCompute
    from trainhub.sdk.exceptions import ComputeTargetException

    target = ComputeTarget.create(ws, "cpu-cluster", AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2"))
    (tmp_path / "train.py").write_text("print('hello')\n")
    run = Experiment(ws, "kept").submit(
        ScriptRunConfig(source_directory=str(tmp_path), script="train.py", compute_target=target), show_progress=False
    )
    with pytest.raises(ComputeTargetException, match="1 run\\(s\\) were made on it"):
        target.delete()
    environment = run.get_environment()
    assert (environment.name, environment.version, environment.is_curated) == ("TrainHub-PyTorch-2.13-CPU", 1, True)
    assert list(ws.compute_targets) == ["cpu-cluster"]


@pytest.mark.parametrize(
    "azure_name",
    [
        "TrainHub-PyTorch-1.6-GPU",  # the rule applied to AzureML-PyTorch-1.6-GPU
        "TrainHub-acpt-pytorch-2.2-cuda12.1",
        "azureml-acpt-pytorch-2.2-cuda12.1",  # as the DDP notebook writes it
        "TrainHub-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu",
    ],
)
def test_the_cloud_curated_pytorch_names_resolve_to_the_curated_environment(ws, azure_name):
    with pytest.warns(UserWarning, match=f"{azure_name} is TrainHub's curated environment TrainHub-PyTorch-2.13"):
        env = Environment.get(ws, name=azure_name)
    assert (env.name, env.is_curated) == ("TrainHub-PyTorch-2.13", True)
    assert "torch==2.13.0" in env.python.conda_dependencies.pip_packages


def test_an_unknown_cloud_name_is_still_not_found(ws):
    with pytest.raises(exceptions.NotFoundError, match="TrainHub-TensorFlow-2.4-GPU"):
        Environment.get(ws, name="TrainHub-TensorFlow-2.4-GPU")


def test_the_environment_page_names_what_it_answers_to(ws, client_for, owner):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        listed = Environment.list(ws)["TrainHub-PyTorch-2.13"]
    assert "AzureML-acpt-pytorch-2.2-cuda12.1" in listed.answers_to
    page = client_for(owner).get("/w/birds/environments/TrainHub-PyTorch-2.13/").content.decode()
    assert "AzureML-PyTorch-1.6-GPU" in page and "not those the names say" in page


def test_conda_dependencies_is_a_module_as_in_the_cloud_sdk():
    from trainhub.sdk.conda_dependencies import CondaDependencies

    deps = CondaDependencies.create(conda_packages=["scikit-learn"], pip_packages=["pillow==6.2.1"])
    assert "pillow==6.2.1" in deps.serialize_to_string()


def test_a_command_list_is_one_shell_line_with_the_data_input_inside(ws, tmp_path):
    (tmp_path / "cifar").mkdir()
    (tmp_path / "cifar" / "batch_1").write_text("x")
    dataset = Dataset.File.upload_directory(
        src_dir=str(tmp_path / "cifar"), target=(ws.get_default_datastore(), "cifar-10"), show_progress=False
    )
    command = [
        "python -m torch.distributed.launch --nproc_per_node 1 --nnodes 2 --node_rank $NODE_RANK train.py --data-dir",
        dataset.as_download(),
        "--epochs 25",
    ]
    src = ScriptRunConfig(source_directory=str(tmp_path), command=command, compute_target="cpu-cluster")
    assert src.command[:9] == [
        "python",
        "-m",
        "torch.distributed.launch",
        "--nproc_per_node",
        "1",
        "--nnodes",
        "2",
        "--node_rank",
        "$NODE_RANK",
    ]
    assert src.command[10] == "--data-dir" and src.command[11].startswith("{{trainhub-input:")
    assert src.command[12:] == ["--epochs", "25"]


def test_upload_directory_gives_the_folder_contents_not_the_folder(ws, tmp_path):
    (tmp_path / "cifar-10" / "batches").mkdir(parents=True)
    (tmp_path / "cifar-10" / "batches" / "data_batch_1").write_bytes(b"1")
    (tmp_path / "cifar-10" / "readme.html").write_text("cifar")
    datastore = ws.get_default_datastore()
    dataset = Dataset.File.upload_directory(
        src_dir=str(tmp_path / "cifar-10"), target=(datastore, "cifar-10"), overwrite=False, show_progress=False
    )
    assert sorted(f["path"] for f in datastore.list_files()) == [
        "cifar-10/batches/data_batch_1",
        "cifar-10/readme.html",
    ]
    registered = dataset.register(ws, "cifar")
    assert sorted(registered.to_path()) == ["/batches/data_batch_1", "/readme.html"]
    # A pattern keeps naming files relative to its fixed folder, as before.
    patterned = Dataset.File.from_files((datastore, "cifar-10/**")).register(ws, "cifar-pattern")
    assert sorted(patterned.to_path()) == ["/batches/data_batch_1", "/readme.html"]
    with pytest.raises(exceptions.UserErrorException, match="target is \\(datastore, 'folder'\\)"):
        Dataset.File.upload_directory(src_dir=str(tmp_path / "cifar-10"), target="cifar-10")


def test_the_estimator_takes_distributed_training_objects():
    from trainhub.sdk.runconfig import MpiConfiguration, PyTorchConfiguration
    from trainhub.sdk.train.dnn import Gloo, Mpi, Nccl, PyTorch

    gloo = PyTorch(
        source_directory=".",
        entry_script="train.py",
        compute_target="cpu-cluster",
        node_count=2,
        distributed_training=Gloo(),
    )
    assert gloo.distributed_job_config == PyTorchConfiguration(
        communication_backend="Gloo", process_count=2, node_count=2
    )
    nccl = PyTorch(
        source_directory=".",
        entry_script="train.py",
        compute_target="cpu-cluster",
        node_count=2,
        distributed_training=Nccl(),
        use_gpu=True,
    )
    assert nccl.distributed_job_config.communication_backend == "Nccl" and nccl.use_gpu
    mpi = PyTorch(
        source_directory=".",
        entry_script="train.py",
        compute_target="cpu-cluster",
        node_count=2,
        distributed_training=Mpi(process_count_per_node=2),
    )
    assert mpi.distributed_job_config == MpiConfiguration(process_count_per_node=2, node_count=2)
    with pytest.raises(exceptions.UserErrorException, match="not both"):
        PyTorch(
            source_directory=".",
            entry_script="train.py",
            compute_target="cpu-cluster",
            node_count=2,
            distributed_training=Gloo(),
            distributed_backend="mpi",
        )


def test_run_config_target_and_environment_are_the_script_run_config_s(ws):
    from trainhub.sdk.runconfig import DockerConfiguration

    src = ScriptRunConfig(
        source_directory=".",
        script="train.py",
        compute_target="cpu-cluster",
        docker_runtime_config=DockerConfiguration(use_docker=True),
    )
    src.run_config.target = "gpu-cluster"
    src.run_config.environment = Environment("myenv")
    assert (src.compute_target, src.environment.name) == ("gpu-cluster", "myenv")
    assert src.run_config.docker.use_docker is True


def test_the_local_target_without_the_node_package_says_what_to_install(ws, tmp_path, monkeypatch):
    """The bare SDK (here: Debian's Python, which has no TrainHub node package) cannot run a run on this
    machine: the submit says what to install, and records nothing."""
    (tmp_path / "train.py").write_text("print('hi')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")
    src = ScriptRunConfig(source_directory=str(tmp_path), script="train.py")  # no target: 'local'
    with pytest.raises(exceptions.UserErrorException, match="needs TrainHub's node package here") as caught:
        Experiment(ws, "local").submit(src)
    assert "make install" in str(caught.value) and "No module named" in str(caught.value)
    assert Experiment.list(ws, experiment_name="local") == []  # nothing recorded


def test_the_local_target_refuses_what_one_machine_cannot_run(ws, tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    src = ScriptRunConfig(
        source_directory=str(tmp_path),
        script="train.py",
        compute_target="local",
        distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2),
    )
    with pytest.raises(
        exceptions.UserErrorException, match="runs on the submitting machine, one node: this run asks for 2"
    ):
        Experiment(ws, "local").submit(src, show_progress=False)
    with pytest.raises(exceptions.ComputeTargetException, match="'local' names the submitting machine"):
        ComputeTarget.create(ws, "local", AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2"))


def test_a_refused_submit_shows_only_the_real_error(ws, tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    src = ScriptRunConfig(source_directory=str(tmp_path), script="train.py", compute_target="no-such-cluster")
    with pytest.raises(exceptions.UserErrorException, match="No compute target named 'no-such-cluster'") as caught:
        Experiment(ws, "refused").submit(src, show_progress=False)
    shown = "".join(traceback.format_exception(caught.value))
    assert "snapshot" not in shown.lower()
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_a_user_managed_environment_on_a_cluster_is_built_from_its_packages_and_the_log_says_so(ws, tmp_path):
    from runs.services import USER_MANAGED_ON_A_CLUSTER

    ComputeTarget.create(ws, "cpu-cluster", AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2"))
    (tmp_path / "train.py").write_text("print('hi')\n")
    environment = Environment("mine")
    environment.python.user_managed_dependencies = True
    src = ScriptRunConfig(
        source_directory=str(tmp_path), script="train.py", compute_target="cpu-cluster", environment=environment
    )
    run = Experiment(ws, "user-managed").submit(src, show_progress=False)
    assert run.get_environment().python.user_managed_dependencies
    assert list(run.iter_log()) == [USER_MANAGED_ON_A_CLUSTER.format(environment="mine")]


def test_use_gpu_on_a_cpu_cluster_runs_on_cpu_and_the_log_says_so(ws, tmp_path):
    from trainhub.sdk import ComputeTarget
    from trainhub.sdk.compute import AmlCompute
    from trainhub.sdk.train.dnn import PyTorch

    if any(name.startswith("nvidia") for name in os.listdir("/dev")):
        pytest.skip("this machine has a GPU: use_gpu=True is then honoured")
    ComputeTarget.create(ws, "cpu-cluster", AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2"))
    (tmp_path / "train.py").write_text("print('hi')\n")
    estimator = PyTorch(
        source_directory=str(tmp_path), entry_script="train.py", compute_target="cpu-cluster", use_gpu=True
    )
    run = Experiment(ws, "gpu-on-cpu").submit(estimator, show_progress=False)
    assert run.get_status() == "Queued"
    assert list(run.iter_log()) == [
        "WARNING: use_gpu=True asks for a GPU, but compute target 'cpu-cluster' is of size STANDARD_D2_V2, which has "
        "none, and this machine (where its local provisioner starts nodes) has no GPU either: this run runs on CPU "
        "(as the cloud service runs its GPU image on a CPU size)."
    ]


def test_the_cloud_sdk_s_own_packages_are_left_out_with_a_warning(tmp_path):
    from trainhub.sdk.conda_dependencies import CondaDependencies

    (tmp_path / "environment.yml").write_text(
        "dependencies:\n- python=3.11\n- pip:\n  - torch\n  - azureml-mlflow\n  - matplotlib\n  - azureml-dataprep\n"
    )
    with pytest.warns(UserWarning, match="left out azureml-mlflow, azureml-dataprep: the cloud SDK's packages"):
        env = Environment.from_conda_specification("pytorch-mnist-example", tmp_path / "environment.yml")
    assert env.python.conda_dependencies.pip_packages == ["torch", "matplotlib"]
    with pytest.warns(UserWarning, match="CondaDependencies.create: left out azureml-defaults, azureml-core"):
        deps = CondaDependencies.create(pip_packages=["numpy", "azureml-defaults", "azureml-core"])
    assert deps.pip_packages == ["numpy"]
    with pytest.warns(UserWarning, match="add_pip_package: left out azureml-defaults"):
        deps.add_pip_package("azureml-defaults==1.50")
    assert deps.pip_packages == ["numpy"]
