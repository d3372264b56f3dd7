-- Template builds (spec §B.13, §G): a database-backed queue. Kept in step with ../sqlite/0003_builds.sql.
CREATE TABLE builds (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    base_template  TEXT NOT NULL,
    recipe         TEXT NOT NULL,              -- JSON array of instruction strings
    healthcheck    TEXT,                       -- NULL: none (a `base` template)
    vcpus          BIGINT NOT NULL,
    memory_mb      BIGINT NOT NULL,
    skip_pre_post  BIGINT NOT NULL DEFAULT 0,
    archive_kind   TEXT,                       -- tar | tar.gz | zip; NULL: no archive
    status         TEXT NOT NULL,              -- pending | running | success | failed | cancelled
    current_step   BIGINT NOT NULL DEFAULT 0,
    total_steps    BIGINT NOT NULL,
    logs           TEXT NOT NULL DEFAULT '[]', -- JSON array of step log entries
    error          TEXT,
    sandbox_id     TEXT,                       -- the build capsule (no sandboxes row)
    host_id        TEXT,
    template_id    TEXT,                       -- the template made by a successful build
    default_user   TEXT NOT NULL DEFAULT 'root',
    default_env    TEXT NOT NULL DEFAULT '{}',
    created_by     TEXT,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    completed_at   BIGINT
);
CREATE INDEX builds_status ON builds (status, created_at);
