// The REST client: cookie session + double-submit CSRF (spec §B.0, §B.6), the error envelope
// turned into ApiError, network failures into ApiError('network').

export class ApiError extends Error {
	readonly status: number;
	readonly code: string;
	readonly requestId?: string;
	readonly details?: unknown;

	constructor(status: number, code: string, message: string, requestId?: string, details?: unknown) {
		super(message);
		this.name = 'ApiError';
		this.status = status;
		this.code = code;
		this.requestId = requestId;
		this.details = details;
	}

	/** Worth offering "Retry": network loss, server errors, overload. */
	get retryable(): boolean {
		return this.status === 0 || this.status >= 500 || this.status === 429;
	}
}

export const CSRF_COOKIE = 'wrenn_csrf';
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** The value of cookie `name` in a `document.cookie`-style string. */
export function readCookie(cookies: string, name: string): string | undefined {
	for (const part of cookies.split(';')) {
		const i = part.indexOf('=');
		if (i < 0) continue;
		if (part.slice(0, i).trim() === name) return decodeURIComponent(part.slice(i + 1).trim());
	}
	return undefined;
}

/** Turns a failed response into an ApiError, reading the JSON envelope when there is one. */
export async function errorFromResponse(res: Response): Promise<ApiError> {
	let text = '';
	try {
		text = await res.text();
	} catch {
		/* body unreadable: fall through with the status text */
	}
	try {
		const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; request_id?: unknown; details?: unknown } };
		const e = body?.error;
		if (e && typeof e.code === 'string') {
			return new ApiError(
				res.status,
				e.code,
				typeof e.message === 'string' ? e.message : e.code,
				typeof e.request_id === 'string' ? e.request_id : (res.headers.get('x-request-id') ?? undefined),
				e.details
			);
		}
	} catch {
		/* not JSON */
	}
	const fallback = res.status >= 500 ? 'internal_error' : 'http_error';
	const msg = text.trim().slice(0, 200) || res.statusText || `HTTP ${res.status}`;
	return new ApiError(res.status, fallback, msg);
}

export interface RequestOptions {
	query?: Record<string, string | number | boolean | undefined | string[]>;
	body?: unknown;
	signal?: AbortSignal;
	/** Raw body (FormData, Blob); no JSON encoding. */
	raw?: BodyInit;
}

type Fetch = typeof fetch;

export interface ClientEnv {
	fetch: Fetch;
	cookies: () => string;
	base?: string;
	onUnauthorized?: (e: ApiError) => void;
}

export function buildUrl(base: string, path: string, query?: RequestOptions['query']): string {
	let url = base + path;
	if (query) {
		const qs = new URLSearchParams();
		for (const [k, v] of Object.entries(query)) {
			if (v === undefined || v === '') continue;
			if (Array.isArray(v)) for (const item of v) qs.append(k, item);
			else qs.append(k, String(v));
		}
		const s = qs.toString();
		if (s) url += (url.includes('?') ? '&' : '?') + s;
	}
	return url;
}

export class Client {
	constructor(private env: ClientEnv) {}

	/** Sends a request; returns the raw Response of a 2xx, throws ApiError otherwise. */
	async raw(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
		const headers: Record<string, string> = { Accept: 'application/json' };
		let body: BodyInit | undefined = opts.raw;
		if (opts.body !== undefined) {
			headers['Content-Type'] = 'application/json';
			body = JSON.stringify(opts.body);
		}
		if (UNSAFE.has(method)) {
			const csrf = readCookie(this.env.cookies(), CSRF_COOKIE);
			if (csrf) headers['X-CSRF-Token'] = csrf;
		}
		let res: Response;
		try {
			res = await this.env.fetch(buildUrl(this.env.base ?? '', path, opts.query), {
				method,
				headers,
				body,
				credentials: 'same-origin',
				signal: opts.signal
			});
		} catch (e) {
			if (e instanceof DOMException && e.name === 'AbortError') throw e;
			throw new ApiError(0, 'network', 'Cannot reach the Wrenn server. Check your connection.');
		}
		if (!res.ok) {
			const err = await errorFromResponse(res);
			if (err.status === 401) this.env.onUnauthorized?.(err);
			throw err;
		}
		return res;
	}

	async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
		const res = await this.raw(method, path, opts);
		if (res.status === 204) return undefined as T;
		const text = await res.text();
		if (!text) return undefined as T;
		try {
			return JSON.parse(text) as T;
		} catch {
			throw new ApiError(res.status, 'bad_response', 'The server sent a response that is not JSON.');
		}
	}

	get<T>(path: string, query?: RequestOptions['query'], signal?: AbortSignal) {
		return this.request<T>('GET', path, { query, signal });
	}
	post<T>(path: string, body?: unknown) {
		return this.request<T>('POST', path, { body: body ?? {} });
	}
	patch<T>(path: string, body?: unknown) {
		return this.request<T>('PATCH', path, { body });
	}
	put<T>(path: string, body?: unknown) {
		return this.request<T>('PUT', path, { body });
	}
	del<T = void>(path: string, query?: RequestOptions['query']) {
		return this.request<T>('DELETE', path, { query });
	}
}

/** Human text for any thrown value. */
export function errorMessage(e: unknown): string {
	if (e instanceof ApiError) return e.message;
	if (e instanceof Error) return e.message;
	return String(e);
}
