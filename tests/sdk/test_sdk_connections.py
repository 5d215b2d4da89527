"""The SDK keeps one connection per thread to the server for the requests it may send again (no
TCP handshake and no new connection on the server per call), replaces one the server closed as it
sat idle without the caller noticing, and sends a POST without an Idempotency-Key on a connection
of its own (trainhub/sdk/_transport.py)."""

from __future__ import annotations

import pickle
import threading

from datastores.models import Datastore as DatastoreRow
from tests.helpers.proxy import LosingProxy
from trainhub.sdk import Datastore, Workspace

NEVER = r"^never$"


def test_one_threads_calls_share_one_connection(workspace, live_url, owner_token):
    with LosingProxy(live_url, NEVER) as proxy:
        ws = Workspace.get("birds", url=proxy.url, token=owner_token)
        for _ in range(5):
            assert "workspaceblobstore" in ws.datastores
        assert (len(proxy.seen), proxy.connections) == (6, 1)

        # Another thread has its own.
        seen = []
        thread = threading.Thread(target=lambda: seen.append(sorted(ws.datastores)))
        thread.start()
        thread.join()
        assert seen and (len(proxy.seen), proxy.connections) == (7, 2)


def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_call_answered(workspace, live_url, owner_token):
    with LosingProxy(live_url, NEVER, close_idle=True) as proxy:
        ws = Workspace.get("birds", url=proxy.url, token=owner_token)
        for _ in range(3):
            assert "workspaceblobstore" in ws.datastores
    # Each call found the last one's connection closed, and was sent once, on a new one.
    assert [method for method, _, _ in proxy.seen] == ["GET"] * 4
    assert proxy.connections == 4


def test_a_post_without_an_idempotency_key_goes_on_a_connection_of_its_own(workspace, live_url, owner_token):
    with LosingProxy(live_url, NEVER) as proxy:
        ws = Workspace.get("birds", url=proxy.url, token=owner_token)
        Datastore.register(ws, "feathers")
        assert "feathers" in ws.datastores
    assert [(method, key) for method, _, key in proxy.seen] == [("GET", None), ("POST", None), ("GET", None)]
    assert proxy.connections == 2  # the GETs' kept one, and the POST's
    assert DatastoreRow.objects.filter(workspace=workspace, name="feathers").count() == 1


def test_a_workspace_handed_to_another_process_pickles_without_its_connections(workspace, live_url, owner_token):
    ws = Workspace.get("birds", url=live_url, token=owner_token)
    assert "workspaceblobstore" in ws.datastores  # it keeps a connection now
    copied = pickle.loads(pickle.dumps(ws))
    assert "workspaceblobstore" in copied.datastores
