"""Ironic's REST API as the lab's programs use it.

The lab's Ironic runs with ``auth_strategy = noauth``, so a request is plain
HTTP with a microversion header.  An answer is kept whole (status and
body) because the e2e reports the status and Ironic's fault string of a
failure, not just that it failed; status 0 means no answer at all.
"""
import json

import requests


class Answer:
    def __init__(self, code, text):
        self.code, self.text = code, text

    def json(self):
        try:
            return json.loads(self.text)
        except ValueError:
            return {}

    def error(self):
        """Ironic's fault string (its error_message is JSON in a string)."""
        msg = self.json().get("error_message", self.text)
        if isinstance(msg, str):
            try:
                msg = json.loads(msg)
            except ValueError:
                pass
        if isinstance(msg, dict):
            msg = msg.get("faultstring", msg)
        return str(msg)[:400]


class Ironic:
    def __init__(self, url, microversion="latest", timeout=300):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers.update({"X-OpenStack-Ironic-API-Version": microversion,
                                  "Accept": "application/json"})

    def call(self, method, path, body=None):
        try:
            r = self.http.request(method, self.url + path,
                                  data=None if body is None else json.dumps(body),
                                  headers=None if body is None else
                                  {"Content-Type": "application/json"},
                                  timeout=self.timeout)
        except requests.RequestException as e:
            return Answer(0, str(e))
        return Answer(r.status_code, r.text)

    def get(self, path):
        return self.call("GET", path)

    def patch(self, path, *ops):
        return self.call("PATCH", path, list(ops))
