"""Shared test set-up: offline, quiet tools; helpers to build tiny datasets live in tests/helpers.py."""

import os

# No tool may phone home in tests, and TF's start-up chatter hides real failures.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
