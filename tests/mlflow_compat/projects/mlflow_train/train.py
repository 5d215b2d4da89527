"""A training script instrumented with MLflow only, as found in the wild: no TrainHub import."""

import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import mlflow.pytorch  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402

torch.manual_seed(0)
# Instruments Lightning's Trainer.fit: its params, per-epoch metrics and the model land in the run.
mlflow.pytorch.autolog()


class TinyRegressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_index):
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), targets)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(64, 4)
y = x.sum(dim=1, keepdim=True)

with mlflow.start_run() as run:
    print("mlflow run", run.info.run_id, "experiment", run.info.experiment_id, flush=True)
    mlflow.log_params({"lr": 0.05, "hidden": 8})
    mlflow.set_tags({"framework": "torch", "source": "mlflow-script"})
    for epoch in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        mlflow.log_metric("loss", loss.item(), step=epoch)
    with open("summary.txt", "w") as handle:
        handle.write(f"final loss {loss.item():.4f}\n")
    mlflow.log_artifact("summary.txt", artifact_path="reports")

    now = int(time.time() * 1000)
    client = MlflowClient()
    client.log_batch(run.info.run_id, metrics=[Metric("batch_metric", float(i), now, i) for i in range(1000)])
    client.log_batch(run.info.run_id, metrics=[Metric("batch_metric", float(i), now, i) for i in range(1000, 1200)])

    sample = x[:2].numpy()
    signature = infer_signature(sample, model(x[:2]).detach().numpy())
    # Named requirements: MLflow otherwise infers them by loading the model in a subprocess (40 s here).
    mlflow.pytorch.log_model(
        model, name="model", signature=signature, input_example=sample, pip_requirements=["torch==2.13.0"]
    )
    print("logged model; final loss", round(loss.item(), 4), flush=True)

    try:
        MlflowClient().get_run("someone_elses_run_1")
    except Exception as error:  # noqa: BLE001
        print("another run refused:", type(error).__name__, str(error)[:200], flush=True)

    figure, axes = plt.subplots()
    axes.plot([0, 1, 2], [2, 1, 0])
    mlflow.log_figure(figure, "plots/loss.png")
    mlflow.log_text("kept as text", "notes/readme.txt")
    mlflow.log_dict({"hidden": 8, "lr": 0.05}, "config.yaml")

    data = torch.utils.data.TensorDataset(x, y)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(TinyRegressor(), torch.utils.data.DataLoader(data, batch_size=16))
    print("lightning fit done", flush=True)
    mlflow.end_run(status="KILLED")
