"""Make Neutron's database for the lab: ``python -m ovbmc_lab.neutron_db CONF...``.

A real cloud runs ``neutron-db-manage upgrade heads`` against MySQL or
PostgreSQL.  On SQLite that fails (alembic: "No support for ALTER of
constraints in SQLite dialect"), so the lab builds the schema the way
Neutron's own unit tests do (neutron/tests/unit/testlib_api.py, the
neutron-lib SqlFixture): every model imported through
``neutron.db.migration.models.head``, then ``BASEV2.metadata.create_all``.
``up`` then runs ``neutron-db-manage stamp heads`` so the database says it
is at the release's heads, as a migrated one would.  Idempotent
(create_all skips tables that exist).
"""
import sys

from oslo_config import cfg
import sqlalchemy

from ovbmc_lab import sqlite  # noqa: F401  (before any engine exists)


def main(argv):
    if len(argv) < 2:
        sys.exit("usage: python -m ovbmc_lab.neutron_db neutron.conf [ml2_conf.ini...]")
    from neutron.common import config
    from oslo_db import options as db_options
    config.register_common_config_options()
    db_options.set_defaults(cfg.CONF)  # [database], as neutron-server registers it
    config.init(["--config-file=%s" % f for f in argv[1:]], prog="ovbmc-lab-neutron-db")
    from neutron.db.migration.models import head  # noqa: F401  (all the models)
    from neutron_lib.db import model_base
    url = cfg.CONF.database.connection
    engine = sqlalchemy.create_engine(url)
    model_base.BASEV2.metadata.create_all(engine)
    with engine.connect() as conn:
        tables = sqlalchemy.inspect(conn).get_table_names()
    print("neutron_db: %d tables in %s" % (len(tables), url), flush=True)


if __name__ == "__main__":
    main(sys.argv)
