import { describe, expect, it } from 'vitest';
import { age, formatBytes, formatDuration, formatMemoryMb, formatPercent, formatResources, joinPath, looksLikeText, parentPath, pathSegments, timeAgo } from './format';

describe('format', () => {
	it('bytes', () => {
		expect(formatBytes(0)).toBe('0 B');
		expect(formatBytes(1023)).toBe('1023 B');
		expect(formatBytes(1536)).toBe('1.5 KiB');
		expect(formatBytes(50 * 1048576)).toBe('50 MiB');
		expect(formatBytes(undefined)).toBe('—');
		expect(formatBytes(-1)).toBe('—');
	});
	it('memory in MiB', () => {
		expect(formatMemoryMb(512)).toBe('512 MiB');
		expect(formatMemoryMb(2048)).toBe('2 GiB');
		expect(formatMemoryMb(1536)).toBe('1.5 GiB');
		expect(formatResources(2, 1024)).toBe('2 vCPU · 1 GiB');
	});
	it('durations and relative times', () => {
		expect(formatDuration(5)).toBe('5s');
		expect(formatDuration(125)).toBe('2m');
		expect(formatDuration(3600 + 300)).toBe('1h 5m');
		expect(formatDuration(86400 * 2 + 3600)).toBe('2d 1h');
		expect(formatDuration(-1)).toBe('—');
		const now = Date.parse('2026-01-01T12:00:00Z');
		expect(timeAgo('2026-01-01T11:55:00Z', now)).toBe('5m ago');
		expect(timeAgo('2026-01-01T11:59:58Z', now)).toBe('just now');
		expect(timeAgo('2026-01-01T12:03:00Z', now)).toBe('in 3m');
		expect(timeAgo(undefined, now)).toBe('—');
		expect(timeAgo('garbage', now)).toBe('—');
		expect(age('2026-01-01T10:00:00Z', now)).toBe('2h');
	});
	it('percent', () => {
		expect(formatPercent(12.345)).toBe('12.3%');
		expect(formatPercent(undefined)).toBe('—');
	});
	it('paths', () => {
		expect(joinPath('/root', 'a')).toBe('/root/a');
		expect(joinPath('/', 'a')).toBe('/a');
		expect(joinPath('/x', '/abs')).toBe('/abs');
		expect(parentPath('/a/b/c')).toBe('/a/b');
		expect(parentPath('/a')).toBe('/');
		expect(pathSegments('/home/user')).toEqual([
			{ name: '/', path: '/' },
			{ name: 'home', path: '/home' },
			{ name: 'user', path: '/home/user' }
		]);
	});
	it('text detection', () => {
		expect(looksLikeText(new TextEncoder().encode('héllo ✓\n'))).toBe(true);
		expect(looksLikeText(new Uint8Array([104, 0, 105]))).toBe(false);
		expect(looksLikeText(new Uint8Array([0xff, 0xfe, 0x41]))).toBe(false);
	});
});
