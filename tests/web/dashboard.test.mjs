// Browser tests of the dashboard: playwright-core drives Debian's chromium against `wrenn up` on
// a scratch data dir. Run by scripts/web-test.sh (which holds the host-wide capsule lock).
//
// Environment: WRENN_BIN (the wrenn binary), WRENN_IMAGES_DIR (a prebuilt minimal image to
// reuse), WRENN_WEB_START_TIMEOUT (seconds, default 900), WRENN_WEB_KEEP=1 (keep the data dir),
// WRENN_WEB_DIR (serve the UI from this build directory, e.g. web/build, instead of the one
// embedded in the binary: UI work without rebuilding the binary; skips the serving test).
// Screenshots and the server log go to target/web/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, openSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const OUT = join(REPO, 'target', 'web');
const { chromium } = await import(join(REPO, 'web', 'node_modules', 'playwright-core', 'index.mjs'));

const WRENN_BIN = process.env.WRENN_BIN || join(REPO, 'target', 'release', 'wrenn');
const WEB_DIR = process.env.WRENN_WEB_DIR ? resolve(process.env.WRENN_WEB_DIR) : '';
const START_TIMEOUT = Number(process.env.WRENN_WEB_START_TIMEOUT || 900) * 1000;
const RUN = Math.floor(Math.random() * 1e9).toString(36);
const USER = { name: 'Web Tester', email: `web-${RUN}@example.com`, password: 'correct-horse-42' };
const USER2 = { name: 'Second User', email: `web2-${RUN}@example.com`, password: 'correct-horse-43' };

let server, base, browser, context, page, scratch, dataDir;
/** Uncaught exceptions, unhandled rejections and Svelte runtime errors: the test fails on any. */
const pageErrors = [];
/** Everything the page logged, kept in target/web/console.log for diagnosis. */
const CONSOLE_LOG = join(OUT, 'console.log');
function consoleLine(line) {
	try {
		appendFileSync(CONSOLE_LOG, `${new Date().toISOString()} ${line}\n`);
	} catch {
		/* best effort */
	}
}
/** Capsules to destroy at the end if a test failed: id → API key of their team. */
const leftover = new Map();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function freePort() {
	return new Promise((res, rej) => {
		const s = createServer();
		s.listen(0, '127.0.0.1', () => {
			const { port } = s.address();
			s.close(() => res(port));
		});
		s.on('error', rej);
	});
}
async function until(what, fn, ms = 60_000, every = 500) {
	const deadline = Date.now() + ms;
	let last;
	while (Date.now() < deadline) {
		try {
			const v = await fn();
			if (v) return v;
		} catch (e) {
			last = e;
		}
		await sleep(every);
	}
	throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}
async function shot(name, p = page) {
	await p.screenshot({ path: join(OUT, `${name}.png`), fullPage: false });
}
/** Keeps what explains a capsule that got stuck: the server log and the capsule's runsc logs. */
function saveCapsuleLogs(id, why) {
	const dir = join(dataDir, 'capsules', id);
	const saved = [];
	for (const f of ['runsc.log', 'runsc-panic.log', 'console.log']) {
		if (existsSync(join(dir, f))) {
			copyFileSync(join(dir, f), join(OUT, `${why}-${id}-${f}`));
			saved.push(`${why}-${id}-${f}`);
		}
	}
	copyFileSync(join(OUT, 'wrenn-up.log'), join(OUT, `${why}-wrenn-up.log`));
	saved.push(`${why}-wrenn-up.log`);
	return saved;
}
/** Waits for a capsule status on the detail page; on timeout keeps the logs and says where. */
async function waitStatus(id, status, key, why) {
	try {
		await page.locator(`[data-status="${status}"]`).first().waitFor({ timeout: 180_000 });
	} catch (e) {
		const r = key ? await api('GET', `/v1/capsules/${id}`, { key }).catch(() => null) : null;
		const saved = saveCapsuleLogs(id, why);
		throw new Error(`capsule ${id} not ${status} after 180 s (API says ${JSON.stringify(r?.body?.status)}); kept target/web/{${saved.join(',')}}: ${e.message}`);
	}
}
async function api(method, path, { key, body } = {}) {
	const r = await fetch(base + path, {
		method,
		headers: { ...(key ? { 'X-API-Key': key } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}) },
		body: body ? JSON.stringify(body) : undefined
	});
	const text = await r.text();
	return { status: r.status, body: text ? JSON.parse(text) : null };
}

/**
 * Makes a signed-up user a platform admin. The admin routes take a user login only, and the
 * one admin `wrenn up` creates has no password, so the API cannot do it with the admin API key
 * (tried first, in case it learns to): the test then sets the flag in the server's SQLite
 * database (the server re-reads is_admin on every request).
 */
async function makeAdmin(email) {
	const adminKey = readFileSync(join(dataDir, 'admin-api-key'), 'utf8').trim();
	const me = await page.evaluate(() => fetch('/v1/me').then((r) => r.json()));
	const r = await api('PUT', `/v1/admin/users/${me.user_id}/admin`, { key: adminKey, body: { admin: true } });
	if (r.status !== 204) {
		execFileSync('sqlite3', [join(dataDir, 'wrenn.db'), `.timeout 10000`, `UPDATE users SET is_admin = 1 WHERE email = '${email.replace(/'/g, "''")}'`]);
	}
	const after = await page.evaluate(() => fetch('/v1/me').then((r) => r.json()));
	assert.equal(after.is_admin, true, `could not make ${email} an admin (API answered ${r.status})`);
}

/** Answers the UI's GETs from a build directory (WRENN_WEB_DIR); the API stays the server's. */
async function serveUiFrom(ctx, dir) {
	const API = /^\/(v1|api|auth|health|metrics|openapi\.json|docs)(\/|$)/;
	const TYPES = { '.js': 'text/javascript', '.css': 'text/css', '.html': 'text/html', '.json': 'application/json', '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.woff2': 'font/woff2', '.txt': 'text/plain' };
	await ctx.route(`${base}/**`, (route) => {
		const url = new URL(route.request().url());
		if (route.request().method() !== 'GET' || API.test(url.pathname)) return route.fallback();
		let file = join(dir, decodeURIComponent(url.pathname));
		if (!file.startsWith(dir) || !existsSync(file) || !/\.[a-z0-9]+$/i.test(file)) file = join(dir, 'index.html');
		const ext = file.slice(file.lastIndexOf('.'));
		return route.fulfill({ status: 200, body: readFileSync(file), contentType: TYPES[ext] ?? 'application/octet-stream' });
	});
}

before(async () => {
	mkdirSync(OUT, { recursive: true });
	assert.ok(existsSync(WRENN_BIN), `wrenn binary not found at ${WRENN_BIN} (set WRENN_BIN)`);
	scratch = mkdtempSync(join(tmpdir(), 'wrenn-web-'));
	const data = join(scratch, 'data');
	dataDir = data;
	writeFileSync(CONSOLE_LOG, '');
	mkdirSync(join(data, 'images'), { recursive: true });
	const images = process.env.WRENN_IMAGES_DIR;
	if (images) {
		const img = existsSync(join(images, 'image.json')) ? images : join(images, 'minimal');
		assert.ok(existsSync(join(img, 'image.json')), `WRENN_IMAGES_DIR=${images} holds no minimal image`);
		symlinkSync(img, join(data, 'images', 'minimal'), 'dir');
	}
	const port = await freePort();
	base = `http://127.0.0.1:${port}`;
	const log = openSync(join(OUT, 'wrenn-up.log'), 'w');
	const env = { ...process.env };
	delete env.WRENN_API_KEY;
	delete env.WRENN_BASE_URL;
	server = spawn(WRENN_BIN, ['up', '--data-dir', data, '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', log, log], env, detached: true });
	const keyFile = join(data, 'admin-api-key');
	await until('wrenn up (admin-api-key)', async () => {
		if (server.exitCode !== null) throw new Error(`wrenn up exited with ${server.exitCode}; see target/web/wrenn-up.log`);
		return existsSync(keyFile) && readFileSync(keyFile, 'utf8').trim();
	}, START_TIMEOUT, 250);

	browser = await chromium.launch({
		executablePath: '/usr/bin/chromium',
		headless: true,
		args: [
			'--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
			// Pages answered by a route have no address space: Local Network Access would then
			// block their WebSocket to 127.0.0.1.
			...(WEB_DIR ? ['--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests'] : [])
		]
	});
	context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
	if (WEB_DIR) await serveUiFrom(context, WEB_DIR);
	page = await context.newPage();
	page.on('pageerror', (e) => {
		pageErrors.push(`pageerror on ${page.url()}: ${e.message}`);
		consoleLine(`[pageerror] ${page.url()} ${e.stack ?? e.message}`);
	});
	page.on('console', (m) => {
		const text = m.text();
		consoleLine(`[${m.type()}] ${page.url()} ${text}`);
		// Failed requests are logged by the browser as errors too; the tests force some (500,
		// offline, a bad build recipe). Svelte's runtime errors and unhandled rejections count.
		if (m.type() === 'error' && /Unhandled|uncaught|svelte|TypeError|ReferenceError/i.test(text) && !/Failed to load resource/.test(text)) {
			pageErrors.push(`console on ${page.url()}: ${text}`);
		}
	});
	page.setDefaultTimeout(30_000);
});

after(async () => {
	// Capsules outlive `wrenn up`: destroy whatever a failed test left behind, as the admin.
	try {
		const key = readFileSync(join(scratch, 'data', 'admin-api-key'), 'utf8').trim();
		const users = (await fetch(base + '/v1/capsules', { headers: { 'X-API-Key': key } }).then((r) => r.json())) ?? [];
		void users;
		if (leftover.size) {
			for (const [id, k] of leftover) await api('DELETE', `/v1/capsules/${id}`, { key: k }).catch(() => {});
			await until('leftover capsules stopped', async () => {
				for (const [id, k] of leftover) {
					const r = await api('GET', `/v1/capsules/${id}`, { key: k });
					if (!['stopped', 'error'].includes(r.body?.status)) return false;
				}
				return true;
			}, 90_000, 1000).catch(() => {});
		}
	} catch {
		/* best effort */
	}
	await browser?.close().catch(() => {});
	if (server && server.exitCode === null) {
		try {
			process.kill(-server.pid, 'SIGTERM');
		} catch {
			/* gone */
		}
		await until('wrenn up to stop', () => server.exitCode !== null, 60_000).catch(() => {
			try {
				process.kill(-server.pid, 'SIGKILL');
			} catch {
				/* gone */
			}
		});
	}
	if (scratch && process.env.WRENN_WEB_KEEP !== '1') rmSync(scratch, { recursive: true, force: true });
});

test('the binary serves the built dashboard with cache headers', { skip: WEB_DIR ? 'WRENN_WEB_DIR serves the UI' : false }, async () => {
	const r = await fetch(base + '/capsules', { headers: { 'Accept-Encoding': 'br' } });
	assert.equal(r.status, 200);
	assert.equal(r.headers.get('cache-control'), 'no-cache');
	const html = await (await fetch(base + '/', { headers: { 'Accept-Encoding': 'identity' } })).text();
	assert.match(html, /_app\/immutable/, 'the UI is embedded (build web/ before the binary)');
	const asset = html.match(/\/_app\/immutable\/[^"]+\.js/)[0];
	const a = await fetch(base + asset);
	assert.equal(a.headers.get('cache-control'), 'public, max-age=31536000, immutable');
	const nf = await fetch(base + '/v1/nope');
	assert.equal(nf.status, 404);
	assert.equal((await nf.json()).error.code, 'not_found');
});

test('the end-to-end flow', { timeout: 15 * 60_000 }, async (t) => {
	let capsuleId;
	let keyValue;

	await t.test('sign up, sign in', async () => {
		await page.goto(base + '/');
		await page.waitForURL(/\/login/);
		await shot('login');
		await page.getByRole('link', { name: 'Sign up' }).click();
		await page.getByLabel('Name').fill(USER.name);
		await page.getByLabel('Email').fill(USER.email);
		await page.getByLabel('Password').fill(USER.password);
		await shot('signup');
		await page.getByRole('button', { name: 'Sign up' }).click();
		await page.waitForURL(/\/login\?notice=/);
		await page.getByLabel('Email').fill(USER.email);
		await page.getByLabel('Password').fill(USER.password);
		await page.getByRole('button', { name: 'Sign in' }).click();
		await page.waitForURL(/\/capsules/);
		await page.getByRole('heading', { name: 'Capsules' }).waitFor();
		await page.getByTestId('empty-state').waitFor();
		await shot('capsules-empty');
	});

	await t.test('keyboard only: Tab to launch, Enter opens the dialog, Escape closes it', async () => {
		await page.goto(base + '/capsules');
		await page.getByTestId('launch-open').waitFor();
		let found = false;
		for (let i = 0; i < 40 && !found; i++) {
			await page.keyboard.press('Tab');
			found = await page.evaluate(() => document.activeElement?.getAttribute('data-testid') === 'launch-open');
		}
		assert.ok(found, 'Tab reaches the launch button');
		const ring = await page.evaluate(() => {
			const el = document.activeElement;
			const cs = getComputedStyle(el);
			return { focusVisible: el.matches(':focus-visible'), style: cs.outlineStyle, width: cs.outlineWidth, shadow: cs.boxShadow };
		});
		assert.ok(ring.focusVisible && ring.style !== 'none' && parseFloat(ring.width) >= 1, `focus ring visible: ${JSON.stringify(ring)}`);
		await shot('keyboard-focus');
		await page.keyboard.press('Enter');
		const dialog = page.getByRole('dialog', { name: 'Launch capsule' });
		await dialog.waitFor();
		assert.ok(await page.evaluate(() => !!document.activeElement?.closest('dialog')), 'focus moved into the dialog');
		await page.keyboard.press('Escape');
		await dialog.waitFor({ state: 'hidden' });
		assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('data-testid')), 'launch-open', 'focus is back on the launch button');
	});

	await t.test('launch a capsule; it reaches running', async () => {
		await page.getByTestId('launch-open').click();
		await page.getByTestId('template-picker').waitFor();
		await page.getByTestId('launch-submit').click();
		await page.waitForURL(/\/capsules\/cl-/);
		capsuleId = page.url().match(/capsules\/(cl-[a-z0-9]+)/)[1];
		await waitStatus(capsuleId, 'running', null, 'launch');
		await page.waitForTimeout(1500);
		await shot('capsule-overview');
		await page.goto(base + '/capsules');
		await page.locator(`tr[data-capsule="${capsuleId}"] [data-status="running"]`).waitFor();
		await shot('capsules');
		await page.setViewportSize({ width: 390, height: 844 });
		try {
			await shot('capsules-narrow');
			// Wide tables scroll inside their card; the page itself fits the screen.
			const right = await page.evaluate(() => Math.max(...['main', 'header', 'h1'].map((s) => document.querySelector(s)?.getBoundingClientRect().right ?? 0)));
			assert.ok(right <= 391, `content reaches ${right}px at 390 px`);
		} finally {
			await page.setViewportSize({ width: 1280, height: 800 });
		}
	});

	await t.test('terminal: echo hello-$RANDOM shows in the buffer', async () => {
		await page.goto(`${base}/capsules/${capsuleId}?tab=terminal`);
		await page.getByTestId('terminal-state').filter({ hasText: 'Connected' }).waitFor({ timeout: 60_000 });
		const term = page.getByTestId('terminal');
		await term.click();
		const marker = `hello-${Math.floor(Math.random() * 32768)}`;
		await page.keyboard.type(`echo ${marker} ✓\n`);
		await until('echo output in the terminal', async () => {
			const text = await term.locator('.xterm-rows').innerText();
			// The typed line holds the marker once; the output line is the second occurrence.
			return text.split(marker).length - 1 >= 2 && text.includes('✓');
		}, 30_000);
		await shot('terminal');
		// A second shell tab works too.
		await page.getByTestId('terminal-add').click();
		// The new tab's shell connects and works; the first tab is hidden meanwhile.
		await page.locator('[data-testid="terminal-state"]:visible').filter({ hasText: 'Connected' }).waitFor();
		const term2 = page.locator('[data-testid="terminal"]:visible');
		await term2.click();
		await page.keyboard.type(`echo second-${marker}\n`);
		await until('echo output in the second terminal', async () => (await term2.locator('.xterm-rows').innerText()).split(`second-${marker}`).length - 1 >= 2, 30_000);
	});

	await t.test('files: folder, upload, preview, download', async () => {
		await page.goto(`${base}/capsules/${capsuleId}?tab=files`);
		await page.getByTestId('file-table').waitFor();
		const folder = `webtest-${RUN}`;
		await page.getByTestId('new-folder').click();
		await page.getByLabel(/^Name \(in/).fill(folder);
		await page.getByTestId('mkdir-submit').click();
		await page.locator(`tr[data-file="${folder}"]`).waitFor();
		await page.locator(`tr[data-file="${folder}"] button`).first().click();
		await page.getByTestId('breadcrumb').getByText(folder).waitFor();
		const content = `line one ✓\nbytes ${RUN}\n`;
		const local = join(scratch, 'upload.txt');
		writeFileSync(local, content);
		await page.getByTestId('upload-input').setInputFiles(local);
		await page.locator('tr[data-file="upload.txt"]').waitFor({ timeout: 60_000 });
		await page.locator('tr[data-file="upload.txt"] button').first().click();
		await page.getByTestId('preview-text').filter({ hasText: `bytes ${RUN}` }).waitFor({ timeout: 60_000 });
		await shot('files');
		const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download upload.txt' }).click()]);
		const saved = join(scratch, 'downloaded.txt');
		await download.saveAs(saved);
		assert.deepEqual(readFileSync(saved), Buffer.from(content));
		// Source files are highlighted (the highlighter loads with the first preview).
		const py = join(scratch, 'hello.py');
		writeFileSync(py, 'import os\n\ndef greet(name):\n    # say hello\n    return f"hello {name} ✓" if name else None\n');
		await page.getByTestId('upload-input').setInputFiles(py);
		await page.locator('tr[data-file="hello.py"]').waitFor({ timeout: 60_000 });
		await page.locator('tr[data-file="hello.py"] button').first().click();
		const hl = page.locator('[data-testid="preview-text"][data-highlighted="true"]');
		await hl.locator('.hl-keyword', { hasText: 'def' }).waitFor({ timeout: 60_000 });
		assert.equal(await hl.locator('.hl-comment').first().innerText(), '# say hello');
		assert.equal((await hl.innerText()).trim(), readFileSync(py, 'utf8').trim());
		await shot('files-highlight');
	});

	await t.test('processes tab lists the shells', async () => {
		await page.goto(`${base}/capsules/${capsuleId}?tab=processes`);
		await page.getByRole('tabpanel').locator('table, [data-testid="empty-state"]').first().waitFor();
		await shot('processes');
	});

	await t.test('pause, then resume', async () => {
		await page.goto(`${base}/capsules/${capsuleId}`);
		await page.getByTestId('action-pause').click();
		await page.getByTestId('confirm-ok').click();
		await waitStatus(capsuleId, 'paused', null, 'pause');
		await shot('capsule-paused');
		await page.getByTestId('action-resume').click();
		await page.getByTestId('confirm-ok').click();
		await waitStatus(capsuleId, 'running', null, 'resume');
		// The terminal works again after the resume.
		await page.goto(`${base}/capsules/${capsuleId}?tab=terminal`);
		await page.getByTestId('terminal-state').filter({ hasText: 'Connected' }).waitFor({ timeout: 60_000 });
	});

	await t.test('create an API key and use it from the test process', async () => {
		await page.goto(base + '/keys');
		await page.getByLabel('Name').fill('web-test');
		await page.getByTestId('create-key').click();
		keyValue = (await page.getByTestId('new-key-value').innerText()).trim();
		assert.match(keyValue, /^wrn_[0-9a-f]{32}$/);
		await shot('keys');
		leftover.set(capsuleId, keyValue);
		const r = await api('GET', `/v1/capsules/${capsuleId}`, { key: keyValue });
		assert.equal(r.status, 200);
		assert.equal(r.body.id, capsuleId);
		const ex = await api('POST', `/v1/capsules/${capsuleId}/exec`, { key: keyValue, body: { cmd: '/bin/sh', args: ['-c', `cat /root/webtest-${RUN}/upload.txt`] } });
		assert.equal(ex.status, 200, JSON.stringify(ex.body));
		assert.match(ex.body.stdout, new RegExp(`bytes ${RUN}`));
	});

	await t.test('invite a second user to the team', async () => {
		const r = await api('POST', '/v1/auth/signup', { body: USER2 });
		assert.equal(r.status, 201, JSON.stringify(r.body));
		await page.goto(base + '/team');
		await page.getByTestId('invite-email').fill(USER2.email);
		await page.getByTestId('invite-submit').click();
		await page.getByTestId('member-table').getByText(USER2.email, { exact: true }).waitFor();
		await shot('team');
	});

	await t.test('the audit log shows these actions', async () => {
		await page.goto(base + '/audit');
		await page.getByTestId('audit-table').waitFor();
		const events = await until('audit events', async () => {
			await page.reload();
			await page.getByTestId('audit-table').waitFor();
			const list = await page.getByTestId('audit-event').allInnerTexts();
			const want = ['sandbox.create', 'sandbox.pause', 'sandbox.resume', 'api_key.create', 'member.add'];
			return want.every((w) => list.includes(w)) && list;
		}, 30_000, 1000);
		assert.ok(events.length >= 5);
		await page.getByTestId('audit-event').first().click();
		await shot('audit');
	});

	await t.test('other pages render', async () => {
		for (const [path, name] of [['/templates', 'templates'], ['/stats', 'metrics'], ['/usage', 'usage'], ['/settings', 'settings']]) {
			await page.goto(base + path);
			await page.locator('h1').first().waitFor();
			await page.waitForTimeout(800);
			assert.equal(await page.getByTestId('error-state').count(), 0, `${path} shows an error`);
			await shot(name);
		}
		// Dark theme.
		await page.goto(base + '/capsules');
		await page.emulateMedia({ colorScheme: 'dark' });
		await page.reload();
		await page.getByRole('heading', { name: 'Capsules' }).waitFor();
		assert.equal(await page.evaluate(() => document.documentElement.classList.contains('dark')), true);
		await shot('capsules-dark');
		await page.emulateMedia({ colorScheme: 'light' });
	});

	await t.test('admin pages: users, teams, hosts, templates, builds', async () => {
		await makeAdmin(USER.email);
		await page.goto(base + '/capsules');
		await page.getByRole('link', { name: 'Admin' }).click();
		await page.getByRole('heading', { name: 'Platform admin' }).waitFor();
		const panel = page.getByRole('tabpanel');
		for (const [tab, ready] of [
			['Users', () => panel.getByRole('cell', { name: new RegExp(USER.email.replace(/[.]/g, '\\.')) }).first()],
			['Teams', () => panel.locator('table').first()],
			['Hosts', () => panel.locator('table [data-status]').first()],
			['Templates', () => panel.getByRole('cell', { name: 'minimal', exact: true }).first()]
		]) {
			await page.getByRole('tab', { name: tab }).click();
			await ready().waitFor();
			assert.equal(await page.getByTestId('error-state').count(), 0, `Admin → ${tab} shows an error`);
			await shot(`admin-${tab.toLowerCase()}`);
		}
		// Builds: empty, and a bad recipe gets the server's 400 message, with nothing started.
		await page.getByRole('tab', { name: 'Builds' }).click();
		await panel.getByTestId('empty-state').filter({ hasText: 'No builds yet' }).waitFor();
		await shot('admin-builds');
		await page.getByTestId('build-new').click();
		const form = page.getByRole('dialog', { name: 'New template build' });
		await form.getByLabel('Template name').fill(`web-${RUN}`);
		await form.getByLabel(/^Recipe/).fill('RUN echo ok\nFROBNICATE the-widgets');
		const [resp] = await Promise.all([
			page.waitForResponse((r) => r.url().endsWith('/v1/admin/builds') && r.request().method() === 'POST'),
			page.getByTestId('build-submit').click()
		]);
		assert.equal(resp.status(), 400);
		const message = (await resp.json()).error.message;
		assert.match(message, /FROBNICATE/);
		const shown = page.getByTestId('build-error');
		await shown.filter({ hasText: message }).waitFor();
		await shot('admin-builds-error');
		await page.keyboard.press('Escape');
		await form.waitFor({ state: 'hidden' });
		const builds = await page.evaluate(() => fetch('/v1/admin/builds').then((r) => r.json()));
		assert.deepEqual(builds, [], 'a rejected recipe starts no build');
	});

	await t.test('a server error shows a message and a retry', async () => {
		await page.route('**/v1/capsules', (route) =>
			route.request().method() === 'GET'
				? route.fulfill({ status: 500, contentType: 'application/json', body: '{"error":{"code":"internal_error","message":"forced failure"}}' })
				: route.continue()
		);
		await page.goto(base + '/capsules');
		await page.getByTestId('error-state').filter({ hasText: 'forced failure' }).waitFor();
		await shot('error-500');
		await page.unroute('**/v1/capsules');
		await page.getByTestId('error-state').getByRole('button', { name: 'Retry' }).click();
		await page.getByTestId('capsule-table').waitFor();
		assert.equal(await page.getByTestId('error-state').count(), 0);
	});

	await t.test('an offline period shows a message and a retry', async () => {
		await page.goto(base + '/capsules');
		await page.getByTestId('capsule-table').waitFor();
		await context.setOffline(true);
		await page.getByRole('link', { name: 'API keys' }).click();
		await page.getByTestId('error-state').filter({ hasText: 'offline' }).waitFor();
		await shot('error-offline');
		await context.setOffline(false);
		await page.waitForTimeout(500);
		await page.getByTestId('error-state').getByRole('button', { name: 'Retry' }).click();
		await page.getByRole('cell', { name: /web-test/ }).waitFor();
		assert.equal(await page.getByTestId('error-state').count(), 0);
	});

	await t.test('destroy', async () => {
		await page.goto(base + '/capsules');
		await page.getByRole('button', { name: `destroy ${capsuleId}` }).click();
		await page.getByTestId('confirm-ok').click();
		await until('capsule gone from the list', async () => (await page.locator(`tr[data-capsule="${capsuleId}"]`).count()) === 0, 120_000);
		const r = await api('GET', `/v1/capsules/${capsuleId}`, { key: keyValue });
		assert.ok(['stopping', 'stopped'].includes(r.body.status), JSON.stringify(r.body));
		leftover.delete(capsuleId);
	});

	await t.test('sign out', async () => {
		await page.getByRole('button', { name: 'Sign out' }).click();
		await page.waitForURL(/\/login/);
	});

	assert.deepEqual(pageErrors, [], 'no uncaught errors or unhandled rejections in the page');
});
