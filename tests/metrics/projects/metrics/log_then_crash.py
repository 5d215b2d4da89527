"""Logs 10,000 points of a metric as fast as it can, then crashes before the next flush."""

from trainhub.sdk import Run

run = Run.get_context()
run.tag("purpose", "crash test")
for step in range(10_000):
    run.log("loss", 1.0 / (step + 1))
print("logged 10000 points", flush=True)
raise RuntimeError("crashed right after logging")
