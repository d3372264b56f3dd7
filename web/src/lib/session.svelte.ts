// Who is signed in, which team, and the team list for the switcher.
import { api } from './client';
import type { Me, Team } from './types';

class Session {
	me = $state<Me | null>(null);
	teams = $state<Team[]>([]);
	loaded = $state(false);

	get team(): Team | undefined {
		return this.teams.find((t) => t.id === this.me?.team_id);
	}
	get canManage(): boolean {
		return this.me?.role === 'owner' || this.me?.role === 'admin';
	}

	async load(): Promise<void> {
		const [me, teams] = await Promise.all([api.get<Me>('/v1/me'), api.get<Team[]>('/v1/teams')]);
		this.me = me;
		this.teams = teams;
		this.loaded = true;
	}

	async refreshTeams(): Promise<void> {
		this.teams = await api.get<Team[]>('/v1/teams');
	}

	async switchTeam(id: string): Promise<void> {
		await api.post('/v1/auth/switch-team', { team_id: id });
		await this.load();
	}

	async logout(): Promise<void> {
		try {
			await api.post('/v1/auth/logout');
		} finally {
			this.me = null;
			this.teams = [];
			this.loaded = false;
		}
	}
}

export const session = new Session();
