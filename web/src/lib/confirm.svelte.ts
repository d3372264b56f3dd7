// One confirmation dialog for the whole app: `await confirmAction({...})` → true / false.
export interface ConfirmRequest { title: string; body: string; action: string; danger?: boolean }

class ConfirmState {
	request = $state<ConfirmRequest | null>(null);
	#resolve: ((ok: boolean) => void) | null = null;
	ask(req: ConfirmRequest): Promise<boolean> {
		this.#resolve?.(false);
		this.request = req;
		return new Promise((resolve) => (this.#resolve = resolve));
	}
	answer(ok: boolean): void {
		this.#resolve?.(ok);
		this.#resolve = null;
		this.request = null;
	}
}
export const confirmState = new ConfirmState();
export const confirmAction = (req: ConfirmRequest) => confirmState.ask(req);
