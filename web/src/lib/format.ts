// Formatting helpers: sizes, durations, relative times, resources.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(n: number | undefined | null): string {
	if (n === undefined || n === null || !Number.isFinite(n)) return '—';
	if (n < 0) return '—';
	let v = n;
	let i = 0;
	while (v >= 1024 && i < UNITS.length - 1) {
		v /= 1024;
		i++;
	}
	const digits = i === 0 ? 0 : v < 10 ? 1 : 0;
	return `${v.toFixed(digits)} ${UNITS[i]}`;
}

/** Memory given in MiB: "512 MiB", "2 GiB", "1.5 GiB". */
export function formatMemoryMb(mb: number | undefined): string {
	if (mb === undefined || !Number.isFinite(mb)) return '—';
	if (mb >= 1024) {
		const g = mb / 1024;
		return `${Number.isInteger(g) ? g : g.toFixed(1)} GiB`;
	}
	return `${Math.round(mb)} MiB`;
}

/** A duration in seconds, coarse: "45s", "3m", "2h 5m", "4d 3h". */
export function formatDuration(seconds: number): string {
	if (!Number.isFinite(seconds) || seconds < 0) return '—';
	const s = Math.floor(seconds);
	if (s < 60) return `${s}s`;
	const m = Math.floor(s / 60);
	if (m < 60) return `${m}m`;
	const h = Math.floor(m / 60);
	if (h < 24) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
	const d = Math.floor(h / 24);
	return h % 24 ? `${d}d ${h % 24}h` : `${d}d`;
}

/** "5m ago", "just now", "in 3m" relative to `now` (ms). */
export function timeAgo(iso: string | undefined, now: number = Date.now()): string {
	if (!iso) return '—';
	const t = Date.parse(iso);
	if (Number.isNaN(t)) return '—';
	const diff = (now - t) / 1000;
	if (Math.abs(diff) < 10) return 'just now';
	return diff > 0 ? `${formatDuration(diff)} ago` : `in ${formatDuration(-diff)}`;
}

/** Age of something created at `iso`: "3m", "2h 5m". */
export function age(iso: string | undefined, now: number = Date.now()): string {
	if (!iso) return '—';
	const t = Date.parse(iso);
	if (Number.isNaN(t)) return '—';
	return formatDuration(Math.max(0, (now - t) / 1000));
}

export function formatDateTime(iso: string | undefined): string {
	if (!iso) return '—';
	const d = new Date(iso);
	if (Number.isNaN(d.getTime())) return '—';
	return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function formatPercent(v: number | undefined, digits = 1): string {
	if (v === undefined || !Number.isFinite(v)) return '—';
	return `${v.toFixed(digits)}%`;
}

export function formatNumber(v: number | undefined, digits = 0): string {
	if (v === undefined || !Number.isFinite(v)) return '—';
	return v.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** "1 vCPU · 512 MiB". */
export function formatResources(vcpus: number | undefined, memoryMb: number | undefined): string {
	const cpu = vcpus === undefined ? '—' : `${vcpus} vCPU`;
	return `${cpu} · ${formatMemoryMb(memoryMb)}`;
}

/** Joins a directory and a name into an absolute path. */
export function joinPath(dir: string, name: string): string {
	if (name.startsWith('/')) return name;
	return (dir.endsWith('/') ? dir : dir + '/') + name;
}

/** Breadcrumb segments of an absolute path: [{name:'/',path:'/'},{name:'home',path:'/home'},…]. */
export function pathSegments(path: string): { name: string; path: string }[] {
	const parts = path.split('/').filter(Boolean);
	const out = [{ name: '/', path: '/' }];
	let acc = '';
	for (const p of parts) {
		acc += '/' + p;
		out.push({ name: p, path: acc });
	}
	return out;
}

export function parentPath(path: string): string {
	const parts = path.split('/').filter(Boolean);
	parts.pop();
	return '/' + parts.join('/');
}

/** Whether bytes look like text (no NUL, valid UTF-8). */
export function looksLikeText(bytes: Uint8Array): boolean {
	if (bytes.includes(0)) return false;
	try {
		new TextDecoder('utf-8', { fatal: true }).decode(bytes);
		return true;
	} catch {
		return false;
	}
}
