// Shapes of the REST API (spec §B) the dashboard reads.

export type CapsuleStatus =
	| 'pending' | 'starting' | 'running' | 'pausing' | 'paused' | 'snapshotting' | 'resuming'
	| 'stopping' | 'hibernated' | 'stopped' | 'missing' | 'error';

export interface Capsule {
	id: string;
	status: CapsuleStatus;
	template: string;
	vcpus: number;
	memory_mb: number;
	timeout_sec: number;
	created_at: string;
	started_at?: string;
	last_active_at?: string;
	last_updated: string;
	metadata?: Record<string, string>;
	disk_size_mb?: number;
	disk_used_mb?: number;
	status_reason?: string;
}

export interface Template {
	name: string;
	type: 'base' | 'snapshot';
	vcpus?: number;
	memory_mb?: number;
	size_bytes: number;
	created_at: string;
	platform: boolean;
	protected: boolean;
	metadata?: Record<string, string>;
}

export interface AuthResponse { token: string; user_id: string; team_id: string; email: string; name: string }

export interface Me {
	name: string;
	email: string;
	has_password: boolean;
	providers: string[];
	user_id: string;
	team_id: string;
	role: 'owner' | 'admin' | 'member';
	is_admin: boolean;
}

export interface Team { id: string; name: string; slug: string; is_byoc: boolean; created_at: string; role?: 'owner' | 'admin' | 'member' }
export interface Member { user_id: string; name: string; email: string; role: 'owner' | 'admin' | 'member'; joined_at: string }

export interface ApiKey {
	id: string;
	team_id: string;
	name: string;
	key_prefix: string;
	created_by?: string;
	creator_email?: string;
	created_at: string;
	last_used?: string;
	key?: string;
}

export interface AuditEntry {
	id: string;
	actor_type: string;
	actor_id: string;
	actor_name: string;
	resource_type: string;
	resource_id: string;
	action: string;
	scope: string;
	status: string;
	metadata: Record<string, unknown>;
	created_at: string;
}
export interface AuditPage { items: AuditEntry[]; next_before?: string; next_before_id?: string }

export interface MetricPoint { timestamp_unix: number; cpu_pct: number; mem_bytes: number; disk_bytes: number }
export interface CapsuleMetrics { sandbox_id: string; range: string; points: MetricPoint[] }

export interface Stats {
	range: string;
	current: { running_count: number; vcpus_reserved: number; memory_mb_reserved: number };
	peaks: { running_count: number; vcpus: number; memory_mb: number };
	series: { labels: string[]; running: number[]; vcpus: number[]; memory_mb: number[] };
}
export interface Usage { from: string; to: string; points: { date: string; cpu_minutes: number; ram_mb_minutes: number }[] }

export interface FileEntry {
	name: string;
	path: string;
	type: 'file' | 'directory' | 'symlink';
	size: number;
	mode: number;
	permissions: string;
	owner: string;
	group: string;
	modified_at: number;
	symlink_target?: string;
}

export interface Process { pid: number; tag?: string; cmd: string; args?: string[] }

export interface AdminUser { id: string; email: string; name: string; is_admin: boolean; status: string; created_at: string; teams_joined: number; teams_owned: number }
export interface AdminTeam { id: string; name: string; slug: string; is_byoc: boolean; created_at: string; deleted_at?: string; member_count: number; owner_name?: string; owner_email?: string; active_sandbox_count: number }
export interface Paged { total: number; page: number; per_page: number; total_pages: number }
export interface AdminTemplate { name: string; type: string; vcpus: number; memory_mb: number; size_bytes: number; team_id: string; created_at: string; platform: boolean; protected: boolean }
export interface Host { id: string; type: string; team_id?: string; team_name?: string; arch?: string; cpu_cores?: number; memory_mb?: number; disk_gb?: number; address?: string; status: string; last_heartbeat_at?: string; created_at: string }

/** One finished build step (spec §G). */
export interface BuildLog { step: number; phase: string; cmd: string; stdout?: string; stderr?: string; exit?: number; ok: boolean; elapsed_ms?: number }
export type BuildStatus = 'pending' | 'running' | 'success' | 'failed' | 'cancelled';
/** The Build object (spec §B.13). */
export interface Build {
	id: string;
	name: string;
	base_template: string;
	recipe: string[];
	healthcheck?: string;
	vcpus: number;
	memory_mb: number;
	skip_pre_post?: boolean;
	status: BuildStatus;
	current_step: number;
	total_steps: number;
	logs: BuildLog[];
	error?: string;
	sandbox_id?: string;
	template_type?: string;
	created_at: string;
	started_at?: string;
	completed_at?: string;
}
