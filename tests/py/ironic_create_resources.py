#!/usr/bin/env python3
"""Feed an enrollment file to python-ironicclient's own `baremetal create` code
(`ironicclient.v1.create_resources.create_resources`) with a client whose API records the
requests instead of sending them: the file is validated by the client's schema and every node
and port goes through the client's attribute checks (an unknown node field is refused there),
with no Ironic running. Prints the recorded POSTs as JSON, one per line, then `OK`.

Used by tests/it/cli.rs (nodes_json_passes_ironicclients_create_resources); by hand:

    python tests/py/ironic_create_resources.py nodes.json

Exit status: 0 when everything would be created, 1 when the client refused something.
"""
import json
import sys
import uuid

from ironicclient.v1 import create_resources, node, port


class RecordingApi:
    """Stands in for the HTTP client: answers each POST as Ironic would, with a UUID."""

    def __init__(self):
        self.posts = []

    def json_request(self, method, url, body=None, headers=None, **kwargs):
        self.posts.append({"method": method, "url": url, "body": body})
        answer = dict(body or {})
        answer["uuid"] = str(uuid.uuid4())
        return None, answer


class Client:
    def __init__(self, api):
        self.node = node.NodeManager(api)
        self.port = port.PortManager(api)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    api = RecordingApi()
    try:
        create_resources.create_resources(Client(api), [sys.argv[1]])
    except Exception as e:  # the client's own message says what it refused
        print("REFUSED: %s" % e)
        return 1
    for p in api.posts:
        print(json.dumps(p, sort_keys=True))
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
