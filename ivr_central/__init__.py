"""edge-ivr central: the collector every site's box posts its event log to, PostgreSQL behind it, the KPIs
across sites and the manager's dashboard (docs/central.md). Its own console script, ``ivr-central``."""
