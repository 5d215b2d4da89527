"""TrainHub: a self-hosted team portal for training PyTorch models at scale."""
