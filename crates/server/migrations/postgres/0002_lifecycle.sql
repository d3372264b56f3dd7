-- Capsule lifecycle, snapshots and usage (spec §B.2, §F.2). Kept in step with ../sqlite/0002_lifecycle.sql.

-- Why a capsule ended in `error` / `stopped` by the system (agent failure text, `orphaned`, …).
ALTER TABLE sandboxes ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
CREATE INDEX sandboxes_status ON sandboxes (status);

-- Metric points kept when a capsule pauses (the agent's ring buffers are flushed into it), so
-- GET …/metrics of a paused capsule still answers. Deleted with the capsule.
CREATE TABLE sandbox_metric_points (
    sandbox_id  TEXT NOT NULL,
    tier        TEXT NOT NULL,
    ts          BIGINT NOT NULL,
    cpu_pct     DOUBLE PRECISION NOT NULL,
    mem_bytes   BIGINT NOT NULL,
    disk_bytes  BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, tier, ts)
);

-- Per-team reservation samples (every 10 s while the team has active capsules): the stats
-- series and peaks, and the source of daily usage.
CREATE TABLE sandbox_metrics_snapshots (
    team_id             TEXT NOT NULL,
    sampled_at          BIGINT NOT NULL,
    running_count       BIGINT NOT NULL,
    vcpus_reserved      BIGINT NOT NULL,
    memory_mb_reserved  BIGINT NOT NULL,
    PRIMARY KEY (team_id, sampled_at)
);
