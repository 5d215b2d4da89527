"""The guide's older `azureml.train` estimators, under the same module paths."""
