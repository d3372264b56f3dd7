import { sveltekit } from '@sveltejs/kit/vite';
import tailwindcss from '@tailwindcss/vite';
import { defineConfig } from 'vitest/config';

// `npm run dev` proxies the API to a running `wrenn up` (WRENN_URL, default 127.0.0.1:8080).
const target = process.env.WRENN_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
	plugins: [tailwindcss(), sveltekit()],
	server: {
		proxy: {
			'/v1': { target, ws: true, changeOrigin: false },
			'/health': target
		}
	},
	test: {
		include: ['src/**/*.test.ts'],
		environment: 'node'
	}
});
