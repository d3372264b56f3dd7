import { describe, expect, it } from 'vitest';
import { highlight, languageFor } from './highlight';

const kinds = (text: string, name: string) => highlight(text, name).filter((t) => t.kind !== 'plain').map((t) => `${t.kind}:${t.text}`);

describe('highlight', () => {
	it('picks the language by extension or name', () => {
		expect(languageFor('/root/app.py')).toBe('py');
		expect(languageFor('Dockerfile')).toBe('dockerfile');
		expect(languageFor('.bashrc')).toBe('bashrc');
		expect(languageFor('notes.txt')).toBeUndefined();
	});
	it('keeps the text intact', () => {
		const src = 'def f(x):\n    return "a\\"b" # done\n';
		expect(highlight(src, 'a.py').map((t) => t.text).join('')).toBe(src);
	});
	it('finds keywords, strings, comments and numbers', () => {
		expect(kinds('const x = 42; // hi', 'a.ts')).toEqual(['keyword:const', 'number:42', 'comment:// hi']);
		expect(kinds('echo "$HOME" # c', 'a.sh')).toEqual(['string:"$HOME"', 'comment:# c']);
		expect(kinds('{"a": true}', 'a.json')).toEqual(['attr:"a"', 'literal:true']);
		expect(kinds('x = f"a {b}" # c', 'a.py')).toEqual(['string:f"a {b}"', 'comment:# c']);
		expect(kinds('SELECT 1 from t', 'q.sql')).toEqual(['keyword:SELECT', 'number:1', 'keyword:from']);
	});
	it('treats unknown files and markup as text, never HTML', () => {
		expect(highlight('<b>x</b>', 'a.txt')).toEqual([{ kind: 'plain', text: '<b>x</b>' }]);
		expect(kinds('<b class="y">', 'a.html')).toEqual(['tag:<b', 'attr:class', 'string:"y"', 'tag:>']);
	});
});
