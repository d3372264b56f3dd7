import { describe, expect, it } from 'vitest';
import { Utf8Stream, backoff, decodeFrame, encodeControl, encodeInput, ptyUrl, resizeMessage, startMessage } from './framing';

describe('terminal framing', () => {
	it('encodes keystrokes as UTF-8 bytes', () => {
		expect(Array.from(encodeInput('a\r'))).toEqual([97, 13]);
		expect(Array.from(encodeInput('é'))).toEqual([0xc3, 0xa9]);
		expect(Array.from(encodeInput('\x1b[A'))).toEqual([27, 91, 65]);
	});
	it('builds control messages', () => {
		expect(JSON.parse(encodeControl(startMessage(120, 40)))).toMatchObject({ type: 'start', cols: 120, rows: 40, cmd: '/bin/bash' });
		expect(startMessage(0, NaN)).toMatchObject({ cols: 80, rows: 24 });
		// A UTF-8 locale, or readline turns multi-byte characters into Meta keys.
		expect(startMessage(80, 24).envs).toMatchObject({ LANG: 'C.UTF-8', TERM: 'xterm-256color' });
		expect(resizeMessage(100.7, 30)).toEqual({ type: 'resize', cols: 100, rows: 30 });
		expect(resizeMessage(0, 30)).toBeNull();
		expect(encodeControl({ type: 'connect', tag: 'pty-1' })).toBe('{"type":"connect","tag":"pty-1"}');
	});
	it('decodes binary frames as output and text frames as control', () => {
		const buf = new Uint8Array([104, 105]).buffer;
		const out = decodeFrame(buf);
		expect(out.type).toBe('output');
		expect(out.type === 'output' && Array.from(out.data)).toEqual([104, 105]);
		expect(decodeFrame('{"type":"started","tag":"pty-ab","pid":42}')).toEqual({ type: 'started', tag: 'pty-ab', pid: 42 });
		expect(decodeFrame('{"type":"exit","exit_code":3}')).toEqual({ type: 'exit', exitCode: 3 });
		expect(decodeFrame('{"type":"exit"}')).toEqual({ type: 'exit', exitCode: 0 });
		expect(decodeFrame('{"type":"error","data":"gone","fatal":true}')).toEqual({ type: 'error', message: 'gone', fatal: true });
		expect(decodeFrame('{"type":"ping"}')).toEqual({ type: 'ping' });
		expect(decodeFrame('not json')).toEqual({ type: 'unknown', raw: 'not json' });
		const legacy = decodeFrame('{"type":"output","data":"aGk="}');
		expect(legacy.type === 'output' && new TextDecoder().decode(legacy.data)).toBe('hi');
	});
	it('keeps a multi-byte character split across frames whole', () => {
		const bytes = new TextEncoder().encode('✓ ok');
		const s = new Utf8Stream();
		const a = s.push(bytes.slice(0, 1));
		const b = s.push(bytes.slice(1));
		expect(a + b + s.end()).toBe('✓ ok');
		expect(a).toBe('');
	});
	it('derives the WebSocket URL and the back-off', () => {
		expect(ptyUrl({ protocol: 'https:', host: 'w.example' }, 'cl-1')).toBe('wss://w.example/v1/capsules/cl-1/pty');
		expect(ptyUrl({ protocol: 'http:', host: '127.0.0.1:8080' }, 'cl-1')).toBe('ws://127.0.0.1:8080/v1/capsules/cl-1/pty');
		expect([0, 1, 2, 10].map(backoff)).toEqual([500, 1000, 2000, 10000]);
	});
});
