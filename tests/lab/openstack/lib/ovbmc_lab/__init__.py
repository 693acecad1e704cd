"""ovbmc's OpenStack lab, the Python half.

The bash scripts (tests/lab/openstack/{up,smoke,down}) own the processes and
the configuration files; this package holds what has to run *inside* the
OpenStack Python environment:

settings   the lab's ports, credentials and paths, read from the environment
           that lib/common.sh exports from lab.conf (never repeated here)
sqlite     makes SQLite safe for multi-threaded services (imported first)
serve      serves one WSGI application without uwsgi or Apache
neutron    a null Networking API, the one stub in the lab
fakevirt   Nova's fake virt driver, made slow and restart-safe
nova       Nova's API, conductor, scheduler and compute in one process
bootstrap  users, catalog, images, flavor, servers and clouds.yaml
smoke      what a virtual BMC asks of Nova, checked over HTTP

Each module that is a program runs as ``python -m ovbmc_lab.<module>``
with tests/lab/openstack/lib on PYTHONPATH (``up`` and ``smoke`` do that).
"""
