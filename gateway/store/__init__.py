"""The gateway's durable state in one SQLite file: what must survive a restart (events, opt state,
registration, report backlog). `db` opens it and migrates the schema; one module per area reads and writes."""
