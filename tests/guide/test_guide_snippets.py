"""Every Python code block of the guide (all three editions, tests/guide/seeds/), run against a
live TrainHub with real nodes, with only the import lines and the curated names rewritten.

The rewrite: `azureml.core` → `trainhub.sdk`, `azureml.train.dnn` → `trainhub.sdk.train.dnn`
(import lines only) and `AzureML-` → `TrainHub-` in curated environment names. On a machine
without GPUs, GPU_SUBSTITUTIONS below are applied too, each one listed; nothing else changes.

Free variables come from fixtures: a working folder with config.json, `pytorch_train.py` (a small
real training script), `conda_dependencies.yml`, the scripts the distributed snippets name, and
`exp`, `ds`. Snippets run in order within a flow, sharing one namespace, as in a notebook.

Mapping of every snippet to the test that runs it (MAPPING below is checked against the guide):

- imports; `ws = Workspace.from_config()`; `project_folder = './pytorch-birds'` …; the
  `cluster_name = "gpu-cluster"` try/except: the `guide` fixture runs them for every flow;
  test_the_cluster_snippet_finds_the_cluster_it_created runs the last one again.
- `curated_env_name = …; Environment.get(…)`, `save_to_directory`, `from_conda_specification`,
  `clone`, and `from_conda_specification` + `docker.enabled/base_image`:
  test_the_environment_snippets (the Docker one is registered with its fields; running in
  containers is issue 9's). The first also starts the single-node, MPI and legacy flows.
- `ScriptRunConfig(… script='pytorch_train.py' …)`, both editions' `Experiment(…).submit(src)` +
  `wait_for_completion(show_output=True)`, `run.register_model(…)`, `run.download_file(…)`:
  test_single_node_training_registers_and_downloads_the_model.
- `ScriptRunConfig(… MpiConfiguration(node_count=2))`, submitted by the 2020-09 submit snippet:
  test_the_mpi_snippet_runs_under_mpirun_on_two_nodes.
- `PyTorchConfiguration(process_count=4, node_count=2)`: test_the_per_process_snippet_….
- `launch_cmd = "python -m torch.distributed.launch …"`: test_the_per_node_launch_snippet_….
- `args = ['--dist-backend', 'nccl', '--dist-url', '$AZ_BATCHAI_PYTORCH_INIT_METHOD', …]`,
  submitted by the 2020-09 submit snippet: test_the_older_arguments_snippet_….
- 2018 `PyTorch(…, node_count=2, process_count_per_node=1, distributed_backend='mpi', use_gpu=True)`
  and `run = exp.submit(pt_est)`: test_the_estimator_snippets_run_mpi_on_two_nodes_on_cpu_saying_so.
- 2018 `PyTorch(…, script_params={'--data_dir': ds}, …, use_gpu=True)` and `exp.submit(pt_est)`:
  test_the_estimator_snippet_with_a_datastore_reads_the_data_on_the_node (`ds`: the default
  datastore, with a small file uploaded).
- 2018 `import torch` / `import horovod` (the first lines of a training script): NOT RUN — Horovod
  ships only a source distribution that must compile against torch (none is installed here);
  the MPI launch it relies on runs in the estimator test with a torch.distributed script in its place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers.site import download_config, module_site

pytestmark = pytest.mark.slow

SEEDS = Path(os.environ.get("TRAINHUB_GUIDE_DIR", Path(__file__).parent / "seeds"))
HERE = Path(__file__).parent
PROJECTS = HERE.parent / "runs" / "projects"

IMPORT_RULES = (("azureml.train.dnn", "trainhub.sdk.train.dnn"), ("azureml.core", "trainhub.sdk"))
CURATED_RULE = ("'AzureML-", "'TrainHub-")
HAS_GPU = any(name.startswith("nvidia") and name[6:].isdigit() for name in os.listdir("/dev"))
# (guide text, replacement, why) — applied only on a machine without GPUs.
GPU_SUBSTITUTIONS = (
    ("vm_size='STANDARD_NC6'", "vm_size='STANDARD_D2_V2'", "a GPU size becomes a CPU size"),
    ("communication_backend='Nccl'", "communication_backend='Gloo'", "NCCL is not in the CPU torch build"),
    ("'--dist-backend', 'nccl'", "'--dist-backend', 'gloo'", "NCCL is not in the CPU torch build"),
)

# (name, the block starts with, it also contains — None: it is exactly that —, how it is exercised)
MAPPING = (
    ("imports", "import os", "ComputeTargetException", "guide fixture"),
    ("workspace", "ws = Workspace.from_config()", "", "guide fixture"),
    ("project folder", "project_folder = './pytorch-birds'", "", "guide fixture"),
    ("cluster", 'cluster_name = "gpu-cluster"', "", "guide fixture, test_the_cluster_snippet_finds_the_cluster"),
    ("curated env", "curated_env_name = ", "", "test_the_environment_snippets"),
    ("save env", "pytorch_env.save_to_directory", "", "test_the_environment_snippets"),
    (
        "conda env",
        "pytorch_env = Environment.from_conda_specification(name='pytorch-1.6-gpu', "
        "file_path='./conda_dependencies.yml')",
        None,
        "test_the_environment_snippets",
    ),
    ("clone env", "pytorch_env = pytorch_env.clone", "", "test_the_environment_snippets"),
    (
        "docker env",
        "pytorch_env = Environment.from_conda_specification",
        "docker.base_image",
        "test_the_environment_snippets",
    ),
    (
        "script run config",
        "from azureml.core import ScriptRunConfig",
        "script='pytorch_train.py'",
        "test_single_node_training",
    ),
    ("submit 2020-01", "run = Experiment(ws, name='Tutorial-pytorch-birds')", "", "test_single_node_training"),
    ("submit 2020-09", "run = Experiment(ws, name='pytorch-birds')", "", "test_single_node_training"),
    ("register", "model = run.register_model", "", "test_single_node_training"),
    ("download", "# Create a model folder", "run.download_file", "test_single_node_training"),
    ("mpi", "from azureml.core import ScriptRunConfig", "MpiConfiguration(node_count=2)", "test_the_mpi_snippet"),
    (
        "per process",
        "from azureml.core import ScriptRunConfig",
        "PyTorchConfiguration(process_count=4",
        "test_the_per_process_snippet",
    ),
    ("per node", "from azureml.core import ScriptRunConfig", "launch_cmd", "test_the_per_node_launch_snippet"),
    (
        "older arguments",
        "from azureml.core import ScriptRunConfig",
        "communication_backend='Nccl'",
        "test_the_older_arguments_snippet",
    ),
    (
        "estimator with datastore",
        "from azureml.train.dnn import PyTorch",
        "'--data_dir': ds",
        "test_the_estimator_snippet_with_a_datastore",
    ),
    (
        "estimator mpi",
        "from azureml.train.dnn import PyTorch",
        "distributed_backend='mpi'",
        "test_the_estimator_snippets",
    ),
    ("estimator submit", "run = exp.submit(pt_est)", "", "test_the_estimator_snippets"),
    ("horovod import", "import torch", "import horovod", "NOT RUN: Horovod is not installable here"),
)


def guide_blocks() -> list[tuple[str, str]]:
    """(file name, code) of every Python block of every edition, each distinct block once."""
    found: dict[str, str] = {}
    for path in sorted(SEEDS.glob("*.txt")):
        for language, code in re.findall(r"```(\w*)\n(.*?)```", path.read_text(), re.S):
            if language.lower() == "python":
                found.setdefault(code.strip(), path.name)
    return [(name, code) for code, name in found.items()]


def matches(entry: tuple, code: str) -> bool:
    _, starts, contains, _ = entry
    return code == starts if contains is None else code.startswith(starts) and contains in code


def mapped(name: str) -> str:
    """The guide's block called `name` in MAPPING."""
    entry = next(entry for entry in MAPPING if entry[0] == name)
    return next(code for _, code in guide_blocks() if matches(entry, code))


def rewrite(code: str, *, on_gpu: bool = HAS_GPU) -> str:
    """Only the import lines, the curated prefix and, without a GPU, the listed substitutions."""
    lines = []
    for line in code.splitlines():
        if line.lstrip().startswith(("from azureml", "import azureml")):
            for old, new in IMPORT_RULES:
                line = line.replace(old, new)
        lines.append(line)
    code = "\n".join(lines).replace(*CURATED_RULE)
    if not on_gpu:
        for old, new, _ in GPU_SUBSTITUTIONS:
            code = code.replace(old, new)
    return code


def run_snippet(name: str, namespace: dict, **rewrite_options) -> dict:
    exec(compile(rewrite(mapped(name), **rewrite_options), f"<guide: {name}>", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def guide(django_db_blocker, live_server_process, tmp_path_factory):
    """The guide's first four snippets run in a fresh folder; the cluster they made gets two nodes."""
    folder = tmp_path_factory.mktemp("guide")
    shutil.copy(PROJECTS / "tiny" / "train.py", folder / "pytorch_train.py")
    shutil.copy(HERE / "project" / "conda_dependencies.yml", folder)
    # The scripts the distributed snippets name, in the folders they name.
    for script in ("pytorch-birds/pytorch_mnist.py", "src/train.py"):
        (folder / script).parent.mkdir(exist_ok=True)
        shutil.copy(PROJECTS / "ddp" / "ddp_check.py", folder / script)
    for script in ("pytorch-birds/pytorch_horovod_mnist.py", "my-pytorch-project/train.py"):
        (folder / script).parent.mkdir(exist_ok=True)
        shutil.copy(HERE / "project" / "horovod_allreduce.py", folder / script)
    previous = os.getcwd()
    with module_site(django_db_blocker, live_server_process, folder) as site:
        site.write_config(folder)
        os.chdir(folder)
        try:
            namespace: dict = {}
            for name in ("imports", "workspace", "project folder", "cluster"):
                run_snippet(name, namespace)
            site.start_nodes("gpu-cluster", 2)
            yield namespace
        finally:
            os.chdir(previous)


def flow(guide: dict, **free) -> dict:
    """A namespace for one flow: what the first snippets defined, plus the flow's free variables."""
    return dict(guide, **free)


def test_every_python_block_of_the_guide_is_mapped_once():
    blocks = guide_blocks()
    assert len(blocks) == 22
    for file_name, code in blocks:
        found = [entry[0] for entry in MAPPING if matches(entry, code)]
        assert len(found) == 1, (file_name, code[:120], found)
    assert len({mapped(entry[0]) for entry in MAPPING}) == len(MAPPING)


def test_each_gpu_substitution_is_needed_by_some_block():
    rewritten = [rewrite(code, on_gpu=True) for _, code in guide_blocks()]
    for old, _, why in GPU_SUBSTITUTIONS:
        assert any(old in code for code in rewritten), why


def test_the_config_json_from_the_workspace_page_is_what_from_config_reads(live_url, owner, workspace, tmp_path):
    from trainhub.sdk import Workspace

    (tmp_path / "config.json").write_bytes(download_config(owner, live_url))
    found = Workspace.from_config(path=tmp_path)
    assert (found.name, found.url) == ("birds", live_url)


def test_the_cluster_snippet_finds_the_cluster_it_created(guide, capsys):
    assert guide["compute_target"].vm_size == ("STANDARD_NC6" if HAS_GPU else "STANDARD_D2_V2")
    run_snippet("cluster", flow(guide))
    assert "Found existing compute target" in capsys.readouterr().out


def test_the_environment_snippets(guide):
    from trainhub.sdk import Environment

    namespace = run_snippet("curated env", flow(guide))
    assert namespace["pytorch_env"].is_curated
    run_snippet("save env", namespace)
    saved = Path(namespace["curated_env_name"])
    assert "torch==2.13.0" in (saved / "conda_dependencies.yml").read_text()
    # 'TrainHub-PyTorch-1.6-GPU' is the curated PyTorch environment that answers to the cloud's name.
    assert Environment.load_from_directory(saved).python.conda_dependencies.pip_packages == [
        "torch==2.13.0",
        "torchvision",
        "numpy",
        "pillow",
        "onnx",
        "onnxscript",
        "mlflow>=3.1,<4",
        "mpi4py",
    ]

    run_snippet("conda env", namespace)
    assert namespace["pytorch_env"].python.conda_dependencies.get_python_version() == "3.11"
    run_snippet("clone env", namespace)
    assert namespace["pytorch_env"].name == "pytorch-1.6-gpu" and namespace["pytorch_env"].version is None

    run_snippet("docker env", namespace)
    namespace["pytorch_env"].register(namespace["ws"])
    stored = Environment.get(namespace["ws"], "pytorch-1.6-gpu")
    assert stored.docker.enabled
    assert stored.docker.base_image == "mcr.microsoft.com/azureml/openmpi3.1.2-cuda10.1-cudnn7-ubuntu18.04"
    assert stored.python.conda_dependencies.pip_packages == ["torch==2.13.0", "numpy"]


def test_single_node_training_registers_and_downloads_the_model(guide, capsys):
    from trainhub.sdk import Model

    namespace = run_snippet("curated env", flow(guide))
    run_snippet("script run config", namespace)
    run_snippet("submit 2020-01", namespace)
    shown = capsys.readouterr().out
    assert "epoch 29 loss" in shown and "Status: Completed" in shown
    first = namespace["run"]

    run_snippet("submit 2020-09", namespace)
    shown = capsys.readouterr().out
    assert "Status: Completed" in shown and namespace["run"].id != first.id
    printed_sha = re.search(r"model sha256 ([0-9a-f]{64})", shown).group(1)

    run_snippet("register", namespace)
    assert (namespace["model"].name, namespace["model"].version) == ("pytorch-birds", 1)
    assert Model(namespace["ws"], name="pytorch-birds").run_id == namespace["run"].id

    run_snippet("download", namespace)
    weights = Path("model/model.pt")
    assert __import__("hashlib").sha256(weights.read_bytes()).hexdigest() == printed_sha
    assert set(torch.load(weights, weights_only=True)) == {"weight", "bias"}


def test_the_mpi_snippet_runs_under_mpirun_on_two_nodes(guide, capsys):
    namespace = run_snippet("curated env", flow(guide))
    run_snippet("mpi", namespace)
    run_snippet("submit 2020-09", namespace)
    shown = capsys.readouterr().out
    assert "Status: Completed" in shown
    assert sorted(re.findall(r"mpi rank (\d)/2 all_reduce sum 3.0", shown)) == ["0", "1"]


def test_the_per_process_snippet_runs_four_ranks_on_two_nodes(guide):
    namespace = run_snippet("per process", flow(guide))
    run = namespace["run"]
    assert run.wait_for_completion()["status"] == "Completed"
    assert_ranks_reduced(run, world=4)


def test_the_per_node_launch_snippet_runs_the_launcher_on_each_node(guide):
    namespace = run_snippet("per node", flow(guide))
    run = namespace["run"]
    assert run.wait_for_completion()["status"] == "Completed"
    assert_ranks_reduced(run, world=4)


def test_the_older_arguments_snippet_passes_the_init_method_and_rank(guide, capsys):
    namespace = run_snippet("curated env", flow(guide))
    run_snippet("older arguments", namespace)
    run_snippet("submit 2020-09", namespace)
    assert "Status: Completed" in capsys.readouterr().out
    assert_ranks_reduced(namespace["run"], world=2)


def test_the_estimator_snippets_run_mpi_on_two_nodes_on_cpu_saying_so(guide, capsys):
    from trainhub.sdk import Experiment

    namespace = flow(guide, exp=Experiment(guide["ws"], "pytorch-estimator"))
    # use_gpu=True as written: on a CPU size the run goes ahead on CPU, and its log says so.
    run_snippet("estimator mpi", namespace, on_gpu=True)
    run_snippet("estimator submit", namespace)
    run = namespace["run"]
    assert run.wait_for_completion(show_output=True)["status"] == "Completed"
    shown = capsys.readouterr().out
    assert sorted(re.findall(r"mpi rank (\d)/2 all_reduce sum 3.0", shown)) == ["0", "1"]
    if not HAS_GPU:
        assert "WARNING: use_gpu=True asks for a GPU, but compute target 'gpu-cluster'" in shown
        assert "this run runs on CPU" in shown


def assert_ranks_reduced(run, world: int) -> None:
    """Rank 0 of ddp_check.py writes the all_reduce it saw to outputs/result.json."""
    run.download_file("outputs/result.json", "result.json")
    result = json.loads(Path("result.json").read_text())
    assert result == {"world_size": world, "sum": float(world * (world + 1) // 2)}


def test_the_estimator_snippet_with_a_datastore_reads_the_data_on_the_node(guide, capsys):
    from trainhub.sdk import Experiment

    Path("data").mkdir()
    (Path("data") / "birds.csv").write_text("species,wingspan\nheron,1.8\n")
    ds = guide["ws"].get_default_datastore()
    ds.upload(src_dir="./data", target_path="fowl", overwrite=False, show_progress=False)
    Path("my-pytorch-proj").mkdir()
    shutil.copy(HERE / "project" / "list_data.py", "my-pytorch-proj/train.py")

    namespace = flow(guide, ds=ds, exp=Experiment(guide["ws"], "pytorch-estimator-data"))
    run_snippet("estimator with datastore", namespace)
    run_snippet("estimator submit", namespace)
    assert namespace["run"].wait_for_completion(show_output=True)["status"] == "Completed"
    assert "data fowl/birds.csv species,wingspan" in capsys.readouterr().out


def test_the_estimator_turns_script_params_into_arguments_and_adds_its_packages(guide, capsys):
    """Not a snippet of its own: the 2018 estimator's parameters the guide's table describes."""
    from trainhub.sdk import Environment, Experiment
    from trainhub.sdk.train.dnn import PyTorch

    Path("estimator").mkdir()
    shutil.copy(HERE / "project" / "estimator_check.py", "estimator/train.py")
    estimator = PyTorch(
        source_directory="./estimator",
        script_params={"--data_dir": "fowl", "--learning_rate": 0.01, "--verbose": ""},
        compute_target=guide["compute_target"],
        entry_script="train.py",
        pip_packages=["mpi4py"],
    )
    run = Experiment(guide["ws"], "pytorch-estimator-packages").submit(estimator)
    assert run.wait_for_completion(show_output=True)["status"] == "Completed"
    shown = capsys.readouterr().out
    assert "argv ['--data_dir', 'fowl', '--learning_rate', '0.01', '--verbose']" in shown
    assert "mpi4py" in Environment.get(guide["ws"], "pytorch-estimator").python.conda_dependencies.pip_packages


def test_a_distributed_estimator_without_a_backend_is_refused():
    from trainhub.sdk.exceptions import UserErrorException
    from trainhub.sdk.train.dnn import PyTorch

    with pytest.raises(UserErrorException, match="also give distributed_backend='mpi'"):
        PyTorch(source_directory=".", entry_script="train.py", compute_target="gpu-cluster", node_count=2)
