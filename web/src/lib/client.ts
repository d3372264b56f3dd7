// The app's one API client (browser only).
import { goto } from '$app/navigation';
import { Client, type ApiError } from './api';

let redirecting = false;

export const api = new Client({
	fetch: (...args) => fetch(...args),
	cookies: () => (typeof document === 'undefined' ? '' : document.cookie),
	onUnauthorized: (_e: ApiError) => {
		// A lost session sends the user to the login page, once.
		if (redirecting || typeof location === 'undefined' || location.pathname.startsWith('/login')) return;
		redirecting = true;
		const next = location.pathname + location.search;
		void goto(`/login?next=${encodeURIComponent(next)}`).finally(() => (redirecting = false));
	}
});
