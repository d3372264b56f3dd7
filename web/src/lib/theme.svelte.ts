// Light / dark: follows the system unless the user picked one (stored in localStorage).
export type ThemeChoice = 'system' | 'light' | 'dark';

class Theme {
	choice = $state<ThemeChoice>('system');

	init(): void {
		const saved = localStorage.getItem('wrenn-theme');
		this.choice = saved === 'light' || saved === 'dark' ? saved : 'system';
		matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => this.apply());
		this.apply();
	}
	get dark(): boolean {
		return this.choice === 'dark' || (this.choice === 'system' && matchMedia('(prefers-color-scheme: dark)').matches);
	}
	set(choice: ThemeChoice): void {
		this.choice = choice;
		if (choice === 'system') localStorage.removeItem('wrenn-theme');
		else localStorage.setItem('wrenn-theme', choice);
		this.apply();
	}
	cycle(): void {
		this.set(this.choice === 'system' ? (this.dark ? 'light' : 'dark') : this.choice === 'dark' ? 'light' : 'system');
	}
	apply(): void {
		document.documentElement.classList.toggle('dark', this.dark);
	}
}
export const theme = new Theme();
