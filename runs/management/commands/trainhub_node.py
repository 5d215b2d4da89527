"""Run a node of a compute cluster on this machine."""

from __future__ import annotations

import argparse
import json
import os
import socket
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from runs.node_worker import run_node
from trainhub import redis_keys
from trainhub.compute import services
from trainhub.compute.models import ComputeCluster
from trainhub.ops.redis_server import wait_for_redis
from trainhub.redis_conn import MAX_BLOCK_SECONDS, get_redis
from trainhub.sandbox import node_sandbox_support


def default_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class Command(BaseCommand):
    help = "Run a TrainHub node: heart-beats into Redis and executes the runs placed on it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--cluster", required=True, help="The compute target's name.")
        parser.add_argument("--workspace", help="The cluster's workspace (needed when several have that name).")
        parser.add_argument(
            "--address",
            default=settings.TRAINHUB_NODE_ADDRESS,
            help="The address other nodes reach this one at (TRAINHUB_NODE_ADDRESS; default: this host's).",
        )
        parser.add_argument("--name", help="A unique node name (default: generated).")
        parser.add_argument(
            "--docker",
            choices=["auto", "true", "false"],
            default=settings.TRAINHUB_NODE_DOCKER,
            help="Run Docker environments (TRAINHUB_NODE_DOCKER; auto: when a Docker engine answers now).",
        )
        parser.add_argument("--managed", action="store_true", help=argparse_suppress())
        # The local provisioner's standby: everything loaded, it registers only once told to (a
        # message on this token's Redis list, saying when the provisioner decided to add a node).
        parser.add_argument("--standby", metavar="TOKEN", help=argparse_suppress())
        parser.add_argument("--decided-at", type=float, help=argparse_suppress())

    def handle(self, *args, **options) -> None:
        wait_for_redis(settings.REDIS_URL)
        clusters = ComputeCluster.objects.filter(name=options["cluster"])
        if options["workspace"]:
            clusters = clusters.filter(workspace__name=options["workspace"])
        found = list(clusters.select_related("workspace")[:2])
        if not found:
            raise CommandError(f"No compute target named {options['cluster']!r}.")
        if len(found) > 1:
            raise CommandError(
                f"Several workspaces have a compute target named {options['cluster']!r}: add --workspace."
            )
        address = options["address"] or default_address()
        docker, docker_note = services.node_docker_support(options["docker"])
        sandboxed, sandbox_note = node_sandbox_support(settings.TRAINHUB_NODE_SANDBOX)
        decided_at = options["decided_at"]
        if options["standby"]:
            self.stdout.write(f"Standby node of {found[0]} (pid {os.getpid()}): loaded, waiting for the provisioner.")
            self.stdout.flush()
            try:
                decided_at = wait_for_order(options["standby"])
            except KeyboardInterrupt:  # Ctrl-C on `make run`: a standby has nothing to finish
                return
        node = services.node_register(
            cluster=found[0], address=address, managed=options["managed"], name=options["name"], docker=docker
        )
        sandbox_state = sandbox_note if sandboxed else "runs NOT sandboxed"
        # The provisioner's decision to the node being ready (idle, able to take a job): bench/distributed.py reads it.
        since = f" {time.time() - decided_at:.3f} s after the provisioner's decision" if decided_at else ""
        self.stdout.write(f"Node {node.name} of {found[0]} at {address}: {docker_note}; {sandbox_state}; ready{since}.")
        if not sandboxed:
            self.stdout.write(sandbox_note)
        self.stdout.flush()
        run_node(node)


def wait_for_order(token: str) -> float:
    """Block until the provisioner activates this standby; when it decided to (a Unix time)."""
    key = redis_keys.node_standby(token)
    connection.close()  # a fresh one once activated: a long wait may outlast the database's idle timeout
    while True:
        # Not forever in one call: a Redis restart ends the wait, and the next one starts afresh.
        # Under the client's read timeout, which would end it with an error after the retries
        # (with redis-py 8's default of 5 s the standby died and was replaced every 2 minutes).
        popped = get_redis().blpop([key], timeout=MAX_BLOCK_SECONDS)
        if popped:
            return float(json.loads(popped[1])["decided_at"])


def argparse_suppress() -> str:
    return argparse.SUPPRESS
