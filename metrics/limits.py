"""What a run may log, and the NaN/inf policy; each limit can be raised by an environment variable.

- Metric values are finite numbers (JSON numbers; booleans are not numbers). NaN, inf and
  -inf are refused with a 400 by the server. The in-run SDK drops them before sending and
  warns once per metric name on stderr, so a diverging loss never kills a training script.
  MLflow's client (mlflow_compat) is the exception: MLflow keeps them, so they are stored, and
  read back as "NaN", "Infinity", "-Infinity" (metrics/jsonvalues.py); charts leave them out.
- Names are 1 to 255 characters. Tags are strings (key up to 255 characters, value up to
  5,000); row cells are finite numbers, strings (up to 1,000 characters), booleans or null.
- Per run: at most `MAX_POINTS_PER_RUN` points over all its metrics and ranks,
  `MAX_NAMES_PER_RUN` distinct names, `MAX_ROWS_PER_RUN` rows, `MAX_TAGS_PER_RUN` tags.
- Per request: at most `MAX_POINTS_PER_REQUEST` points and rows, `MAX_BODY_BYTES` bytes.
"""

from __future__ import annotations

from trainhub.envvars import envint

MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 1000
MAX_TAG_KEY_LENGTH = 255
MAX_TAG_VALUE_LENGTH = 5000
MAX_CELL_TEXT_LENGTH = 1000
MAX_ROW_CELLS = 100
MAX_RANK = 65_535
MAX_POINTS_PER_RUN = envint("TRAINHUB_METRICS_MAX_POINTS_PER_RUN", 50_000_000)
MAX_NAMES_PER_RUN = envint("TRAINHUB_METRICS_MAX_NAMES_PER_RUN", 1000)
MAX_ROWS_PER_RUN = envint("TRAINHUB_METRICS_MAX_ROWS_PER_RUN", 100_000)
MAX_TAGS_PER_RUN = envint("TRAINHUB_METRICS_MAX_TAGS_PER_RUN", 500)
MAX_POINTS_PER_REQUEST = envint("TRAINHUB_METRICS_MAX_POINTS_PER_REQUEST", 200_000)
MAX_BODY_BYTES = envint("TRAINHUB_METRICS_MAX_BODY_BYTES", 32 * 1024 * 1024)
# Points of one series are stored in chunks of packed arrays; a small batch is appended to
# the series' last chunk until it holds this many points, so slow loggers do not leave a
# million one-point rows behind.
CHUNK_POINTS = 8192
# Seconds after a run ended during which its own token may still send metrics: the last
# flush of a rank that is stopped because another rank failed arrives after the run is final.
RUN_TOKEN_GRACE_SECONDS = envint("TRAINHUB_METRICS_RUN_TOKEN_GRACE_SECONDS", 120)
