// Reports the initial JavaScript of the production build, gzipped: the SvelteKit entries plus
// everything a first visit to /capsules loads (root layout, app layout, capsules page) and their
// static imports. Fails when it exceeds the budget or when xterm / Chart.js / the Files
// highlighter leak into it (they must stay lazy). Run after `vite build` (npm run build does).
import { readFileSync, existsSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';

const BUDGET = 250 * 1024;
const out = '.svelte-kit/output/client';
const manifestPath = join(out, '.vite/manifest.json');
if (!existsSync(manifestPath)) {
	console.error(`bundle-size: ${manifestPath} missing; run vite build first`);
	process.exit(1);
}
const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
const firstVisit = ['src/routes/+layout.svelte', 'src/routes/(app)/+layout.svelte', 'src/routes/(app)/capsules/+page.svelte'];

const roots = Object.keys(manifest).filter((k) => manifest[k].isEntry || firstVisit.some((f) => manifest[k].src === f || k.endsWith(f)));
const seen = new Set();
const stack = [...roots];
while (stack.length) {
	const k = stack.pop();
	if (seen.has(k) || !manifest[k]) continue;
	seen.add(k);
	for (const i of manifest[k].imports ?? []) stack.push(i);
}
let raw = 0;
let gz = 0;
const files = [];
for (const k of seen) {
	const file = manifest[k].file;
	if (!file.endsWith('.js')) continue;
	const bytes = readFileSync(join(out, file));
	const g = gzipSync(bytes, { level: 9 }).length;
	raw += bytes.length;
	gz += g;
	files.push({ file, g });
}
const leaked = [...seen].filter((k) => /xterm|chart\.js|src\/lib\/highlight\.ts/.test(k));
files.sort((a, b) => b.g - a.g);
console.log(`initial JS: ${files.length} files, ${(raw / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzipped (budget ${BUDGET / 1024} KiB)`);
for (const f of files.slice(0, 5)) console.log(`  ${(f.g / 1024).toFixed(1).padStart(7)} KiB  ${f.file}`);
if (leaked.length) {
	console.error(`bundle-size: lazy libraries in the initial bundle: ${leaked.join(', ')}`);
	process.exit(1);
}
if (gz > BUDGET) {
	console.error('bundle-size: over budget');
	process.exit(1);
}
