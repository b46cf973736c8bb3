"""The gateway's durable state in one SQLite file: what must survive a restart (events, opt state,
registration, report backlog, limits sent, the charging-session ledger) and bounded telemetry. `db` opens
it and migrates the schema; one module per area reads and writes."""
