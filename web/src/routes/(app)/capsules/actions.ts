// Capsule lifecycle actions shared by the list and the detail page, each behind a confirmation.
import { api } from '$lib/client';
import { errorMessage } from '$lib/api';
import { confirmAction } from '$lib/confirm.svelte';
import { toasts } from '$lib/toast.svelte';
import type { Capsule, Template } from '$lib/types';

export type Action = 'pause' | 'resume' | 'snapshot' | 'destroy';

export function actionsFor(c: Capsule): Action[] {
	switch (c.status) {
		case 'running':
			return ['pause', 'snapshot', 'destroy'];
		case 'paused':
			return ['resume', 'snapshot', 'destroy'];
		case 'stopped':
		case 'error':
			return [];
		default:
			return ['destroy'];
	}
}

const TEXT: Record<Action, { title: string; body: (id: string) => string; action: string; danger?: boolean }> = {
	pause: { title: 'Pause capsule', body: (id) => `Pause ${id}? Its memory is saved to disk and processes stop until you resume it.`, action: 'Pause' },
	resume: { title: 'Resume capsule', body: (id) => `Resume ${id}?`, action: 'Resume' },
	snapshot: { title: 'Snapshot capsule', body: (id) => `Save ${id} as a snapshot template? New capsules can start from it.`, action: 'Snapshot' },
	destroy: { title: 'Destroy capsule', body: (id) => `Destroy ${id}? Everything inside it is lost. This cannot be undone.`, action: 'Destroy', danger: true }
};

/** Runs `action` on `c` after confirmation; returns true when it was sent. */
export async function runAction(c: Capsule, action: Action): Promise<boolean> {
	const t = TEXT[action];
	if (!(await confirmAction({ title: t.title, body: t.body(c.id), action: t.action, danger: t.danger }))) return false;
	try {
		const id = encodeURIComponent(c.id);
		if (action === 'destroy') await api.del(`/v1/capsules/${id}`);
		else if (action === 'snapshot') {
			const tpl = await api.post<Template>('/v1/snapshots', { sandbox_id: c.id });
			toasts.push('success', `Snapshot ${tpl.name} created`);
			return true;
		} else await api.post(`/v1/capsules/${id}/${action}`);
		toasts.push('info', `${t.action} requested for ${c.id}`);
		return true;
	} catch (e) {
		toasts.push('error', `${t.action} failed: ${errorMessage(e)}`);
		return false;
	}
}
