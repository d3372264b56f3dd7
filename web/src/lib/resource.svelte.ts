// A loaded value with loading / error state. Old data stays while reloading, so polling never
// makes the page jump; `poll()` refreshes on an interval and pauses while the tab is hidden.
import { ApiError } from './api';

export class Resource<T> {
	data = $state<T | undefined>(undefined);
	error = $state<ApiError | Error | null>(null);
	loading = $state(false);
	#seq = 0;

	constructor(private loader: (signal: AbortSignal) => Promise<T>) {}

	async load(): Promise<void> {
		const seq = ++this.#seq;
		const ctl = new AbortController();
		this.loading = true;
		try {
			const v = await this.loader(ctl.signal);
			if (seq === this.#seq) {
				this.data = v;
				this.error = null;
			}
		} catch (e) {
			if (seq === this.#seq && !(e instanceof DOMException && e.name === 'AbortError')) {
				this.error = e instanceof Error ? e : new Error(String(e));
			}
		} finally {
			if (seq === this.#seq) this.loading = false;
		}
	}

	/** Loads now and every `ms` while the document is visible; returns a stop function. */
	poll(ms: number): () => void {
		void this.load();
		let timer: ReturnType<typeof setInterval> | undefined;
		const start = () => {
			if (timer === undefined) timer = setInterval(() => void this.load(), ms);
		};
		const stop = () => {
			if (timer !== undefined) clearInterval(timer);
			timer = undefined;
		};
		const onVisibility = () => {
			if (document.hidden) stop();
			else {
				void this.load();
				start();
			}
		};
		if (!document.hidden) start();
		document.addEventListener('visibilitychange', onVisibility);
		return () => {
			stop();
			document.removeEventListener('visibilitychange', onVisibility);
		};
	}
}
