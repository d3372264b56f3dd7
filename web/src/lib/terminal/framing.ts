// PTY WebSocket framing (spec §C.3): text frames carry JSON control messages, binary frames raw
// terminal bytes in both directions.

export interface StartMessage {
	type: 'start';
	cmd?: string;
	args?: string[];
	cols: number;
	rows: number;
	envs?: Record<string, string>;
	cwd?: string;
}
export interface ConnectMessage { type: 'connect'; tag: string }
export interface ResizeMessage { type: 'resize'; cols: number; rows: number }
export type ClientControl = StartMessage | ConnectMessage | ResizeMessage | { type: 'kill' } | { type: 'pong' };

export type ServerEvent =
	| { type: 'started'; tag: string; pid: number }
	| { type: 'output'; data: Uint8Array }
	| { type: 'exit'; exitCode: number }
	| { type: 'error'; message: string; fatal: boolean }
	| { type: 'ping' }
	| { type: 'unknown'; raw: string };

const encoder = new TextEncoder();

/** Keystrokes (xterm's onData string) → a binary frame. */
export function encodeInput(data: string): Uint8Array<ArrayBuffer> {
	return encoder.encode(data);
}

/** A control message → a text frame. */
export function encodeControl(msg: ClientControl): string {
	return JSON.stringify(msg);
}

/**
 * The start message of a new shell. `LANG` matters: capsules have no locale set, and in the
 * POSIX locale bash's readline takes each byte of a UTF-8 character for a Meta key (`✓` =
 * E2 9C 93 becomes M-b, M-^\, M-^S: the cursor jumps back a word and the character never
 * reaches the command line). C.UTF-8 is built into glibc, so every image has it.
 */
export function startMessage(cols: number, rows: number, cmd = '/bin/bash'): StartMessage {
	return { type: 'start', cmd, args: ['-l'], cols: clampDim(cols, 80), rows: clampDim(rows, 24), envs: { TERM: 'xterm-256color', LANG: 'C.UTF-8' } };
}

export function resizeMessage(cols: number, rows: number): ResizeMessage | null {
	if (!(cols > 0 && rows > 0)) return null;
	return { type: 'resize', cols: Math.floor(cols), rows: Math.floor(rows) };
}

function clampDim(v: number, fallback: number): number {
	return Number.isFinite(v) && v > 0 ? Math.min(Math.floor(v), 1000) : fallback;
}

function decodeBase64(s: string): Uint8Array {
	const bin = atob(s);
	const out = new Uint8Array(bin.length);
	for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
	return out;
}

/** A server frame → an event. Binary frames are output; text frames JSON control messages. */
export function decodeFrame(data: ArrayBuffer | Uint8Array | string): ServerEvent {
	if (typeof data !== 'string') {
		return { type: 'output', data: data instanceof Uint8Array ? data : new Uint8Array(data) };
	}
	let msg: Record<string, unknown>;
	try {
		msg = JSON.parse(data) as Record<string, unknown>;
	} catch {
		return { type: 'unknown', raw: data };
	}
	switch (msg.type) {
		case 'started':
			return { type: 'started', tag: String(msg.tag ?? ''), pid: Number(msg.pid ?? 0) };
		case 'exit':
			return { type: 'exit', exitCode: Number(msg.exit_code ?? 0) };
		case 'error':
			return { type: 'error', message: String(msg.data ?? 'terminal error'), fatal: msg.fatal === true };
		case 'ping':
			return { type: 'ping' };
		case 'output':
			// Legacy base64 text output ([R]); tolerated.
			return typeof msg.data === 'string' ? { type: 'output', data: decodeBase64(msg.data) } : { type: 'unknown', raw: data };
		default:
			return { type: 'unknown', raw: data };
	}
}

/**
 * A streaming UTF-8 decoder for output shown outside xterm (xterm decodes bytes itself): a
 * multi-byte character split across frames comes out whole.
 */
export class Utf8Stream {
	private dec = new TextDecoder('utf-8');
	push(bytes: Uint8Array): string {
		return this.dec.decode(bytes, { stream: true });
	}
	end(): string {
		return this.dec.decode();
	}
}

/** The PTY WebSocket URL for a capsule, relative to the page's origin. */
export function ptyUrl(loc: { protocol: string; host: string }, capsuleId: string): string {
	const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
	return `${proto}//${loc.host}/v1/capsules/${encodeURIComponent(capsuleId)}/pty`;
}

/** Reconnect back-off: 0.5 s, 1 s, 2 s … capped at 10 s. */
export function backoff(attempt: number): number {
	return Math.min(10_000, 500 * 2 ** Math.max(0, attempt));
}
