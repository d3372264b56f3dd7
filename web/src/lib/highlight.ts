// A small syntax highlighter for the Files preview, loaded on first use (dynamic import). It
// splits text into tokens (comment, string, number, keyword, …) with one sticky regular
// expression per language; the caller renders them as spans, so nothing is parsed as HTML.
// Good enough to read code at a glance, not a parser: unknown languages come back as one
// plain token.

export type TokenKind = 'plain' | 'comment' | 'string' | 'number' | 'keyword' | 'literal' | 'tag' | 'attr' | 'meta';
export interface Token { kind: TokenKind; text: string }

interface Lang {
	/** Ordered alternatives: the first that matches at a position wins. */
	rules: [TokenKind, RegExp][];
	keywords?: Set<string>;
	literals?: Set<string>;
	/** Keywords match in any case (SQL). */
	anyCase?: boolean;
}

const words = (s: string) => new Set(s.split(/\s+/).filter(Boolean));
const IDENT: [TokenKind, RegExp] = ['plain', /[A-Za-z_$][\w$]*/];
const NUMBER: [TokenKind, RegExp] = ['number', /\b(?:0[xX][\da-fA-F_]+|0[bB][01_]+|\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?)\b/];
const DQ: [TokenKind, RegExp] = ['string', /"(?:[^"\\\n]|\\.)*"?/];
const SQ: [TokenKind, RegExp] = ['string', /'(?:[^'\\\n]|\\.)*'?/];
const HASH_COMMENT: [TokenKind, RegExp] = ['comment', /#.*/];
const SLASH_COMMENTS: [TokenKind, RegExp][] = [
	['comment', /\/\/.*/],
	['comment', /\/\*[\s\S]*?(?:\*\/|$)/]
];

const C_LIKE_LITERALS = words('true false null undefined nil None True False NaN Infinity this self super');

const js: Lang = {
	rules: [...SLASH_COMMENTS, ['string', /`(?:[^`\\]|\\[\s\S])*`?/], DQ, SQ, NUMBER, IDENT],
	keywords: words(
		'as async await break case catch class const continue debugger default delete do else enum export extends finally for from function get if implements import in instanceof interface let new of package private protected public readonly return satisfies set static switch throw try type typeof var void while with yield keyof declare namespace abstract'
	),
	literals: C_LIKE_LITERALS
};
const json: Lang = { rules: [['attr', /"(?:[^"\\\n]|\\.)*"(?=\s*:)/], DQ, NUMBER, IDENT], literals: words('true false null') };
const python: Lang = {
	rules: [
		HASH_COMMENT,
		['string', /[rRbBuUfF]{0,2}(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)/],
		['meta', /@[\w.]+/],
		NUMBER,
		IDENT
	],
	keywords: words('and as assert async await break class continue def del elif else except finally for from global if import in is lambda match case nonlocal not or pass raise return try while with yield'),
	literals: words('True False None self cls')
};
const shell: Lang = {
	rules: [HASH_COMMENT, DQ, SQ, ['meta', /\$\{[^}\n]*\}?|\$[\w@#?$!*-]/], NUMBER, ['plain', /[A-Za-z_][\w-]*/]],
	keywords: words('if then else elif fi for while until do done case esac in function return local export readonly declare set unset shift exit source trap break continue select time'),
	literals: words('true false')
};
const rust: Lang = {
	rules: [...SLASH_COMMENTS, ['string', /b?r#*"[\s\S]*?"#*/], DQ, ['string', /'(?:[^'\\\n]|\\.)'/], ['meta', /#!?\[[^\]\n]*\]?/], NUMBER, IDENT],
	keywords: words('as async await break const continue crate dyn else enum extern fn for if impl in let loop match mod move mut pub ref return static struct trait type unsafe use where while macro_rules'),
	literals: words('true false self Self super None Some Ok Err')
};
const goLang: Lang = {
	rules: [...SLASH_COMMENTS, ['string', /`[^`]*`?/], DQ, SQ, NUMBER, IDENT],
	keywords: words('break case chan const continue default defer else fallthrough for func go goto if import interface map package range return select struct switch type var'),
	literals: words('true false nil iota')
};
const cLike: Lang = {
	rules: [...SLASH_COMMENTS, ['meta', /^\s*#\s*\w+/m], DQ, SQ, NUMBER, IDENT],
	keywords: words(
		'auto break case char class const continue default delete do double else enum extern final float for friend goto if import inline int long namespace new operator override package private protected public register return short signed sizeof static struct switch template throw throws try typedef typename union unsigned using virtual void volatile while boolean extends implements interface'
	),
	literals: C_LIKE_LITERALS
};
const yaml: Lang = {
	rules: [HASH_COMMENT, ['attr', /^[ \t-]*[\w.-]+(?=\s*:)/m], ['meta', /^\s*\[[^\]\n]*\]/m], ['attr', /^[ \t]*[\w.-]+(?=\s*=)/m], DQ, SQ, NUMBER, IDENT],
	literals: words('true false null yes no on off')
};
const css: Lang = {
	rules: [['comment', /\/\*[\s\S]*?(?:\*\/|$)/], DQ, SQ, ['meta', /@[\w-]+/], ['attr', /[\w-]+(?=\s*:)/], ['number', /#[\da-fA-F]{3,8}\b|\b\d+(?:\.\d+)?(?:px|em|rem|%|vh|vw|s|ms|deg)?\b/], IDENT]
};
const markup: Lang = {
	rules: [['comment', /<!--[\s\S]*?(?:-->|$)/], ['tag', /<\/?[\w:-]+|\/?>/], ['attr', /[\w:-]+(?==)/], DQ, SQ]
};
const sql: Lang = {
	rules: [['comment', /--.*/], ['comment', /\/\*[\s\S]*?(?:\*\/|$)/], SQ, DQ, NUMBER, IDENT],
	keywords: words(
		'select from where insert into values update set delete create table index view drop alter add column primary key foreign references not null unique default and or in is like between join left right inner outer on group by order having limit offset as distinct union all case when then else end returning begin commit rollback exists'
	),
	literals: words('true false null'),
	anyCase: true
};
const dockerfile: Lang = {
	rules: [HASH_COMMENT, DQ, SQ, ['meta', /\$\{[^}\n]*\}?|\$\w+/], NUMBER, ['plain', /[A-Za-z_][\w-]*/]],
	keywords: words('FROM RUN CMD LABEL EXPOSE ENV ADD COPY ENTRYPOINT VOLUME USER WORKDIR ARG ONBUILD STOPSIGNAL HEALTHCHECK SHELL START AS')
};

const BY_EXT: Record<string, Lang> = {
	js, mjs: js, cjs: js, jsx: js, ts: js, tsx: js, mts: js, svelte: js, vue: js,
	json, jsonc: json, ipynb: json,
	py: python, pyi: python,
	sh: shell, bash: shell, zsh: shell, profile: shell, bashrc: shell, env: shell,
	rs: rust, go: goLang,
	c: cLike, h: cLike, cc: cLike, cpp: cLike, hpp: cLike, java: cLike, kt: cLike, cs: cLike, swift: cLike,
	yaml: yaml, yml: yaml, toml: yaml, ini: yaml, conf: yaml, cfg: yaml, service: yaml,
	css, scss: css,
	html: markup, htm: markup, xml: markup, svg: markup,
	sql, dockerfile
};

/** The language for a file name, by extension (or a few well-known names); undefined if unknown. */
export function languageFor(name: string): string | undefined {
	const base = name.split('/').pop()?.toLowerCase() ?? '';
	if (base === 'dockerfile' || base.startsWith('dockerfile.') || base === 'recipe' || base.endsWith('.recipe')) return 'dockerfile';
	if (base === 'makefile') return 'sh';
	if (base.startsWith('.') && BY_EXT[base.slice(1)]) return base.slice(1);
	const dot = base.lastIndexOf('.');
	const ext = dot > 0 ? base.slice(dot + 1) : '';
	return BY_EXT[ext] ? ext : undefined;
}

/** Tokens of `text` in the language of `name`; a single plain token if the language is unknown. */
export function highlight(text: string, name: string): Token[] {
	const id = languageFor(name);
	const lang = id ? BY_EXT[id] : undefined;
	if (!lang) return [{ kind: 'plain', text }];
	const sticky = lang.rules.map(([kind, re]) => [kind, new RegExp(re.source, re.flags.replace(/[gy]/g, '') + 'y')] as const);
	const out: Token[] = [];
	const push = (kind: TokenKind, t: string) => {
		const last = out[out.length - 1];
		if (last && last.kind === kind) last.text += t;
		else out.push({ kind, text: t });
	};
	let i = 0;
	while (i < text.length) {
		let matched = false;
		for (const [kind, re] of sticky) {
			re.lastIndex = i;
			const m = re.exec(text);
			if (!m || m[0].length === 0) continue;
			let k: TokenKind = kind;
			if (kind === 'plain') {
				if (lang.keywords?.has(lang.anyCase ? m[0].toLowerCase() : m[0])) k = 'keyword';
				else if (lang.literals?.has(m[0])) k = 'literal';
			}
			push(k, m[0]);
			i += m[0].length;
			matched = true;
			break;
		}
		if (!matched) {
			push('plain', text[i] ?? '');
			i++;
		}
	}
	return out;
}
