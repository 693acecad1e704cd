"""Serve one WSGI application of the lab: ``python -m ovbmc_lab.serve``.

Usage: python -m ovbmc_lab.serve NAME MODULE[:ATTR] SERVICE [THREADS]

A real cloud runs Keystone, Placement and Glance under uwsgi or Apache.  The
lab needs neither: their WSGI applications run in cheroot, a pure-Python
threaded HTTP server that pip installs beside them, bound to the lab's host
(loopback) and to SERVICE's port from lab.conf.

The application module is imported only here, after the caller has set the
service's ``OS_<SERVICE>_CONFIG_DIR``, so it reads its own configuration
files exactly as under uwsgi.  SIGTERM and SIGINT stop the server cleanly
(``down`` relies on that).
"""
import importlib
import signal
import sys
import threading

from ovbmc_lab import settings


def serve(app, name, host, port, threads):
    """Run ``app`` until SIGTERM/SIGINT; used for Nova's API too."""
    from cheroot import wsgi

    server = wsgi.Server((host, port), app, numthreads=threads,
                         server_name=name, shutdown_timeout=2,
                         request_queue_size=64)

    def stop(signum, _frame):
        print("ovbmc-lab: %s: signal %d, stopping" % (name, signum), flush=True)
        # stop() waits for the serving thread, which is this one: elsewhere
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ovbmc-lab: %s on http://%s:%d" % (name, host, port), flush=True)
    try:
        server.start()
    finally:
        print("ovbmc-lab: %s stopped" % name, flush=True)


def main(argv):
    if len(argv) not in (4, 5):
        sys.exit(__doc__.strip().splitlines()[2])
    name, target, service = argv[1], argv[2], argv[3]
    threads = int(argv[4]) if len(argv) == 5 else 8
    conf = settings.load()
    module_name, _, attr = target.partition(":")
    # oslo.config in some of the apps parses sys.argv: leave it nothing
    sys.argv = [name]
    from ovbmc_lab import sqlite  # noqa: F401  (before any engine exists)
    app = getattr(importlib.import_module(module_name), attr or "application")
    serve(app, name, conf.host, conf.ports[service], threads)


if __name__ == "__main__":
    main(sys.argv)
