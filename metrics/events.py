"""What happens in metrics that parts built on it act on, and who subscribes (each in its app's
ready()): metrics/services.py notifies, and imports none of them."""

from __future__ import annotations

from runs.models import Run
from trainhub.hooks import Hook

# A run's metric series got new points (inside the ingest's transaction).
# Subscriber: sweeps (a child's early-termination policy looks at them once they are stored).
metrics_logged: Hook[[Run], None] = Hook("metrics logged", isolate=True)
