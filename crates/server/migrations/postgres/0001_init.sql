-- Wrenn control plane schema (PostgreSQL). Kept in step with ../sqlite/0001_init.sql: both
-- databases run the same query text, so column names and types must match.
-- Conventions: ids are canonical UUID text; timestamps are unix seconds (BIGINT);
-- flags are BIGINT 0/1 (sqlx's Any driver reads SQLite booleans as integers); JSON is TEXT.
-- Ids that define an order (audit log cursor) use the C collation so PostgreSQL compares them
-- bytewise, like SQLite.

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    is_byoc     BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
INSERT INTO teams (id, name, slug, is_byoc, created_at)
VALUES ('00000000-0000-0000-0000-000000000000', 'Platform', 'platform', 0, 0);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT,
    name           TEXT NOT NULL,
    is_admin       BIGINT NOT NULL DEFAULT 0,
    status         TEXT NOT NULL DEFAULT 'inactive',
    deleted_at     BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE users_teams (
    team_id     TEXT NOT NULL REFERENCES teams (id),
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    is_default  BIGINT NOT NULL DEFAULT 0,
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX users_teams_user ON users_teams (user_id);

CREATE TABLE team_api_keys (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams (id),
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    key_prefix  TEXT NOT NULL,
    created_by  TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL,
    last_used   BIGINT
);
CREATE INDEX team_api_keys_team ON team_api_keys (team_id);

-- Browser sessions (cookie `wrenn_sid`): only hashes of the session and CSRF tokens are kept.
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    team_id     TEXT NOT NULL REFERENCES teams (id),
    csrf_hash   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- One-time tokens (activation, password reset): what upstream kept in Redis.
CREATE TABLE one_time_tokens (
    token_hash  TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE hosts (
    id                 TEXT PRIMARY KEY,
    type               TEXT NOT NULL DEFAULT 'regular',
    team_id            TEXT REFERENCES teams (id),
    provider           TEXT NOT NULL DEFAULT '',
    availability_zone  TEXT NOT NULL DEFAULT '',
    arch               TEXT NOT NULL DEFAULT '',
    cpu_cores          BIGINT NOT NULL DEFAULT 0,
    memory_mb          BIGINT NOT NULL DEFAULT 0,
    disk_gb            BIGINT NOT NULL DEFAULT 0,
    address            TEXT NOT NULL DEFAULT '',
    status             TEXT NOT NULL DEFAULT 'pending',
    last_heartbeat_at  BIGINT,
    metadata           TEXT NOT NULL DEFAULT '{}',
    created_by         TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    cert_fingerprint   TEXT,
    cert_expires_at    BIGINT
);

CREATE TABLE templates (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    type          TEXT NOT NULL,
    vcpus         BIGINT NOT NULL DEFAULT 0,
    memory_mb     BIGINT NOT NULL DEFAULT 0,
    size_bytes    BIGINT NOT NULL DEFAULT 0,
    team_id       TEXT NOT NULL REFERENCES teams (id),
    default_user  TEXT NOT NULL DEFAULT 'root',
    default_env   TEXT NOT NULL DEFAULT '{}',
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_at    BIGINT NOT NULL,
    UNIQUE (team_id, name)
);
INSERT INTO templates (id, name, type, vcpus, memory_mb, size_bytes, team_id, created_at)
VALUES ('00000000-0000-0000-0000-000000000000', 'minimal', 'base', 1, 512, 0,
        '00000000-0000-0000-0000-000000000000', 0);

CREATE TABLE sandboxes (
    id                TEXT PRIMARY KEY,
    team_id           TEXT NOT NULL REFERENCES teams (id),
    host_id           TEXT REFERENCES hosts (id),
    template          TEXT NOT NULL,
    template_id       TEXT,
    template_team_id  TEXT,
    status            TEXT NOT NULL,
    vcpus             BIGINT NOT NULL,
    memory_mb         BIGINT NOT NULL,
    timeout_sec       BIGINT NOT NULL DEFAULT 0,
    disk_size_mb      BIGINT NOT NULL DEFAULT 5120,
    guest_ip          TEXT NOT NULL DEFAULT '',
    host_ip           TEXT NOT NULL DEFAULT '',
    metadata          TEXT NOT NULL DEFAULT '{}',
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    last_active_at    BIGINT,
    last_updated      BIGINT NOT NULL
);
CREATE INDEX sandboxes_team ON sandboxes (team_id, created_at);
CREATE INDEX sandboxes_host ON sandboxes (host_id);

CREATE TABLE audit_logs (
    id             TEXT COLLATE "C" PRIMARY KEY,
    team_id        TEXT NOT NULL,
    actor_type     TEXT NOT NULL,
    actor_id       TEXT NOT NULL DEFAULT '',
    actor_name     TEXT NOT NULL DEFAULT '',
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL DEFAULT '',
    action         TEXT NOT NULL,
    scope          TEXT NOT NULL,
    status         TEXT NOT NULL,
    metadata       TEXT NOT NULL DEFAULT '{}',
    created_at     BIGINT NOT NULL
);
CREATE INDEX audit_logs_team_time ON audit_logs (team_id, created_at DESC, id DESC);
