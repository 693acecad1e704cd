"""A null Networking API: a Neutron that has nothing.

The lab's servers boot with ``networks: none``, yet Nova still asks Neutron
about an instance's ports on show, start, stop, reboot and rebuild, and
cannot run without a network endpoint in the catalog.  Until the lab runs a
real Neutron (issue 13), this WSGI application gives every such question the
answer of an empty cloud:

    GET /                        the v2.0 version document
    GET /v2.0                    no extensions / resources
    GET /v2.0/<things>[.json]    {"<things>": []}, whatever the filter
    GET /v2.0/<things>/<id>      404, as for an id that does not exist
    anything that writes         405: nothing here can change

It checks no tokens.  Served by ``ovbmc_lab.serve`` like a real service, so
it shows up in the catalog and in ``down`` the same way a real Neutron will.
"""
import json


def _json(start_response, status, body):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])
    return [data]


def _fault(start_response, status, kind, message):
    body = {"NeutronError": {"type": kind, "message": message, "detail": ""}}
    return _json(start_response, status, body)


def application(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "/")
    print("null-neutron: %s %s %s" % (method, path, environ.get("QUERY_STRING", "")),
          flush=True)
    parts = [p for p in path.removesuffix(".json").split("/") if p]
    if not parts:
        href = "http://%s/v2.0/" % environ.get("HTTP_HOST", "localhost")
        return _json(start_response, "200 OK", {"versions": [
            {"id": "v2.0", "status": "CURRENT",
             "links": [{"rel": "self", "href": href}]}]})
    if parts[0] != "v2.0":
        return _fault(start_response, "404 Not Found", "HTTPNotFound",
                      "only API v2.0 is here")
    if method != "GET":
        return _fault(start_response, "405 Method Not Allowed",
                      "HTTPMethodNotAllowed",
                      "the lab's null network service cannot change anything")
    rest = parts[1:]
    if not rest:
        return _json(start_response, "200 OK", {"resources": []})
    if len(rest) % 2 == 1:  # a collection, possibly nested: .../ports
        return _json(start_response, "200 OK", {rest[-1].replace("-", "_"): []})
    return _fault(start_response, "404 Not Found", "NotFound",
                  "%s %s could not be found" % (rest[-2], rest[-1]))
