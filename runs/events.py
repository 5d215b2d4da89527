"""What happens to a run that parts built on runs act on, and who subscribes (each in its app's
ready()): runs/services.py notifies, and imports none of them."""

from __future__ import annotations

from runs.models import Run
from trainhub.compute.models import ComputeCluster
from trainhub.hooks import Hook
from trainhub.workspaces.permissions import Access

# A run was queued on the cluster of this pk (after its transaction commits).
# Subscriber: runs.scheduling.dispatch_cluster places it (runs/apps.py).
run_queued: Hook[[int], object] = Hook("run queued", isolate=False)

# A run was just made, in its submit's transaction (before run_queued): a subscriber that answers True
# placed it there (run_queued is then not notified); with True as the third argument, nothing of the
# run is in Redis yet and its placing clears the run's keys (a reused run id's). Subscriber:
# runs.scheduling.place_submitted.
run_submitted: Hook[[Run, ComputeCluster, bool], bool] = Hook("run submitted", isolate=False)

# A user cancels a run: a subscriber that answers True took the cancel over (the run's end is then
# its to bring). Subscriber: sweeps (a sweep's run is canceled by canceling the sweep).
run_cancel_asked: Hook[[Access, Run], bool] = Hook("run cancel asked", isolate=False)

# A started run is asked to stop (its abort key is set). Subscriber: runs.slurm cancels its Slurm job.
run_stopping: Hook[[Run], None] = Hook("run stopping", isolate=False)

# The controller's loop, every few seconds (runs/controller.py). Subscriber: sweeps (a sweep's time
# limit, and the ends of children that the process that ended them did not live to hand over).
controller_tick: Hook[[], None] = Hook("controller tick", isolate=True)

# A run reached a final status. Subscribers: sweeps (the next child starts at once), endpoints (a
# replica that ended is replaced). The end is recorded whatever they do.
run_ended: Hook[[Run], None] = Hook("run ended", isolate=True)
