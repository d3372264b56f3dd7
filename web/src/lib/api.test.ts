import { describe, expect, it, vi } from 'vitest';
import { ApiError, Client, buildUrl, errorFromResponse, readCookie } from './api';

function json(status: number, body: unknown, headers: Record<string, string> = {}) {
	return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

describe('readCookie', () => {
	it('finds a cookie among several and decodes it', () => {
		expect(readCookie('a=1; wrenn_csrf=abc%20d; b=2', 'wrenn_csrf')).toBe('abc d');
		expect(readCookie('wrenn_csrfx=1', 'wrenn_csrf')).toBeUndefined();
		expect(readCookie('', 'x')).toBeUndefined();
	});
});

describe('buildUrl', () => {
	it('skips empty values and repeats arrays', () => {
		expect(buildUrl('', '/v1/audit-logs', { limit: 50, action: '', resource_type: ['a', 'b'], before: undefined })).toBe(
			'/v1/audit-logs?limit=50&resource_type=a&resource_type=b'
		);
		expect(buildUrl('http://h', '/x')).toBe('http://h/x');
	});
});

describe('errorFromResponse', () => {
	it('reads the error envelope', async () => {
		const e = await errorFromResponse(json(409, { error: { code: 'invalid_state', message: 'not running', request_id: 'req_1' } }));
		expect(e).toBeInstanceOf(ApiError);
		expect([e.status, e.code, e.message, e.requestId]).toEqual([409, 'invalid_state', 'not running', 'req_1']);
		expect(e.retryable).toBe(false);
	});
	it('falls back for non-JSON bodies', async () => {
		const e = await errorFromResponse(new Response('Bad Gateway', { status: 502 }));
		expect([e.status, e.code, e.message]).toEqual([502, 'internal_error', 'Bad Gateway']);
		expect(e.retryable).toBe(true);
	});
	it('falls back for JSON without an envelope', async () => {
		const e = await errorFromResponse(json(404, { nope: true }));
		expect(e.code).toBe('http_error');
	});
});

describe('Client', () => {
	it('sends the CSRF header on unsafe methods only, with cookies', async () => {
		const fetch = vi.fn(async (_u: RequestInfo | URL, _i?: RequestInit) => json(200, { ok: 1 }));
		const c = new Client({ fetch: fetch as typeof globalThis.fetch, cookies: () => 'wrenn_csrf=tok123' });
		await c.get('/v1/me');
		await c.post('/v1/capsules', { template: 'minimal' });
		const [getInit, postInit] = [fetch.mock.calls[0]![1]!, fetch.mock.calls[1]![1]!];
		expect((getInit.headers as Record<string, string>)['X-CSRF-Token']).toBeUndefined();
		expect((postInit.headers as Record<string, string>)['X-CSRF-Token']).toBe('tok123');
		expect(postInit.credentials).toBe('same-origin');
		expect(postInit.body).toBe('{"template":"minimal"}');
		expect((postInit.headers as Record<string, string>)['Content-Type']).toBe('application/json');
	});

	it('throws ApiError with the envelope and calls onUnauthorized on 401', async () => {
		const onUnauthorized = vi.fn();
		const c = new Client({
			fetch: (async () => json(401, { error: { code: 'unauthorized', message: 'log in' } })) as typeof fetch,
			cookies: () => '',
			onUnauthorized
		});
		await expect(c.get('/v1/me')).rejects.toMatchObject({ status: 401, code: 'unauthorized', message: 'log in' });
		expect(onUnauthorized).toHaveBeenCalledOnce();
	});

	it('turns a network failure into a retryable ApiError', async () => {
		const c = new Client({ fetch: (async () => { throw new TypeError('Failed to fetch'); }) as typeof fetch, cookies: () => '' });
		const e = await c.get('/v1/capsules').catch((x: unknown) => x);
		expect(e).toBeInstanceOf(ApiError);
		expect((e as ApiError).status).toBe(0);
		expect((e as ApiError).code).toBe('network');
		expect((e as ApiError).retryable).toBe(true);
	});

	it('returns undefined for 204 and parses JSON otherwise', async () => {
		const c = new Client({ fetch: (async (u: string) => (u.endsWith('/del') ? new Response(null, { status: 204 }) : json(200, [1, 2]))) as unknown as typeof fetch, cookies: () => '' });
		expect(await c.del('/del')).toBeUndefined();
		expect(await c.get<number[]>('/list')).toEqual([1, 2]);
	});

	it('rejects a 2xx body that is not JSON', async () => {
		const c = new Client({ fetch: (async () => new Response('<html>', { status: 200 })) as typeof fetch, cookies: () => '' });
		await expect(c.get('/x')).rejects.toMatchObject({ code: 'bad_response' });
	});
});
