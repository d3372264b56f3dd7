// Transient notices (bottom right, aria-live).
export interface Toast { id: number; kind: 'info' | 'error' | 'success'; text: string }

class Toasts {
	list = $state<Toast[]>([]);
	#next = 1;
	push(kind: Toast['kind'], text: string, ms = 5000): void {
		const id = this.#next++;
		this.list = [...this.list, { id, kind, text }];
		setTimeout(() => this.dismiss(id), ms);
	}
	dismiss(id: number): void {
		this.list = this.list.filter((t) => t.id !== id);
	}
}
export const toasts = new Toasts();
