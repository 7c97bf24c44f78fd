#!/usr/bin/env node
// Tokenizes Flow sources with the extension's TextMate grammar (syntaxes/flow.tmLanguage.json)
// exactly as VS Code does (vscode-textmate + vscode-oniguruma) and fails on any character the
// grammar does not scope meaningfully.
//
//   node editors/vscode/test/tokenize.js            every example, corpus case and spec example
//   node editors/vscode/test/tokenize.js FILE.flow  only these files
//
// Which sources: examples/*.flow; tests/corpus/**/*.flow, except the cases whose `// expect:`
// header names a lexical or syntax error (E01xx: those files do not parse); and the ```flow
// blocks of spec/*.md, README.md and this extension's README, except `flow,error=E01xx` ones.
//
// The rule, for every UTF-16 code unit of every source:
//
// 1. Coverage. A character that is not white space must carry a *meaningful* scope: one that
//    is not the base `source.flow` and not a structural `meta.*` scope. No scope may be
//    `invalid.*` (those mark E0102 characters, E0104 escapes and E0105 numbers).
//    Scopes are read from the innermost `${…}` interpolation outwards only, so code inside an
//    interpolation is not "covered" by the string around it.
// 2. Agreement with the lexer. An independent lexer written from spec/lexical.md (below, ~100
//    lines) classifies each character, and the grammar's innermost meaningful scope must fit:
//      doc comment `///`      comment.line.documentation
//      comment `//`           comment.line.double-slash
//      string text and quotes string.quoted.double (or its punctuation.definition.string)
//      escape `\n` `\u{e9}`   constant.character.escape
//      `${` and its `}`       punctuation.section.interpolation
//      integer / float        constant.numeric.integer / constant.numeric.float
//      duration `48h`         constant.numeric.duration (the unit may add keyword.other.unit)
//      keyword                keyword.* / storage.* / constant.language.*
//      keyword as a field     variable.other.property   (`d.type`, `timeout: 48h`)
//      other name             variable.* / entity.name.* / support.*
//      operator, punctuation  keyword.operator.* / punctuation.*
//    So a keyword missing from the grammar (it would read as a plain name), a broken string or
//    escape rule (the text after it would read as code), an interpolation that ends at the
//    wrong `}` or a number rule that misses durations all fail here.
// 3. Targeted assertions on snippets (at the end of this file).
'use strict';

const fs = require('fs');
const path = require('path');

const EXT_DIR = path.resolve(__dirname, '..');
const ROOT = path.resolve(EXT_DIR, '..', '..');
const GRAMMAR = path.join(EXT_DIR, 'syntaxes', 'flow.tmLanguage.json');

let vsctm;
let oniguruma;
try {
  vsctm = require('vscode-textmate');
  oniguruma = require('vscode-oniguruma');
} catch (err) {
  console.error(
    `cannot load vscode-textmate / vscode-oniguruma (${err.message}).\n` +
      'Install the test dependencies with: npm ci --prefix editors/vscode',
  );
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// The grammar, loaded the way VS Code loads it.

async function loadGrammar() {
  const wasm = fs.readFileSync(path.join(path.dirname(require.resolve('vscode-oniguruma')), 'onig.wasm'));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scopeName) => {
      if (scopeName !== 'source.flow') return null;
      return vsctm.parseRawGrammar(fs.readFileSync(GRAMMAR, 'utf8'), GRAMMAR);
    },
  });
  const grammar = await registry.loadGrammar('source.flow');
  if (!grammar) throw new Error(`could not load ${GRAMMAR}`);
  return grammar;
}

/** Scopes of every UTF-16 code unit of `text` (an array of scope arrays), line by line. */
function scopesOf(grammar, text) {
  const out = new Array(text.length);
  let stack = vsctm.INITIAL;
  let offset = 0;
  for (const line of text.split('\n')) {
    const result = grammar.tokenizeLine(line, stack);
    if (result.stoppedEarly) throw new Error('the tokenizer stopped early (time limit)');
    for (const token of result.tokens) {
      for (let i = token.startIndex; i < Math.min(token.endIndex, line.length); i++) {
        out[offset + i] = token.scopes;
      }
    }
    stack = result.ruleStack;
    offset += line.length;
    if (offset < text.length) out[offset] = ['source.flow']; // the '\n'
    offset += 1;
  }
  return out;
}

/** The scopes that say something: from the innermost interpolation in, minus `source.flow` and
 *  `meta.*`. */
function meaningful(scopes) {
  let from = 0;
  scopes.forEach((s, i) => {
    if (s.startsWith('meta.embedded.interpolation')) from = i + 1;
  });
  return scopes.slice(from).filter((s) => s !== 'source.flow' && !s.startsWith('meta.'));
}

// ---------------------------------------------------------------------------------------------
// A reference lexer, from spec/lexical.md: one category per UTF-16 code unit.

const KEYWORDS = new Set(
  `after approval audit await backoff break catch continue else enum fail false for if import
   in input let match none on retry return sensitive sleep timeout tool true try type var via
   while workflow`.split(/\s+/),
);
const UNITS = new Set(['ms', 's', 'm', 'h', 'd']);
const OPERATORS = [
  '?.', '??', '->', '=>', '==', '!=', '<=', '>=', '&&', '||',
  '(', ')', '{', '}', '[', ']', ',', ':', ';', '.', '?', '=', '<', '>', '+', '-', '*', '/', '%', '!',
];
const IDENT = /[\p{L}_][\p{L}\p{N}_]*/uy;
const FLOAT = /[0-9][0-9_]*\.[0-9][0-9_]*/y;
const NUMBER = /([0-9][0-9_]*)([\p{L}_]*)/uy;
const ESCAPE = /\\(?:[ntr0\\"$]|u\{[0-9A-Fa-f]{1,6}\})/y;

function referenceLex(src) {
  const cats = new Array(src.length).fill('ws');
  const tokens = []; // significant code tokens, for field positions: { kind, text, start, end }
  let pos = 0;
  const mark = (start, end, cat) => {
    for (let i = start; i < end; i++) cats[i] = cat;
  };
  const sticky = (re) => {
    re.lastIndex = pos;
    return re.exec(src);
  };

  function code(inInterpolation) {
    let depth = 0;
    while (pos < src.length) {
      const c = src[pos];
      if (' \t\r\n\f'.includes(c)) {
        pos++;
        continue;
      }
      if (src.startsWith('//', pos)) {
        const end = src.indexOf('\n', pos) === -1 ? src.length : src.indexOf('\n', pos);
        mark(pos, end, src.startsWith('///', pos) ? 'doc' : 'comment');
        pos = end;
        continue;
      }
      let m;
      if ((m = sticky(IDENT))) {
        const kind = KEYWORDS.has(m[0]) ? 'keyword' : 'name';
        tokens.push({ kind, text: m[0], start: pos, end: pos + m[0].length });
        pos += m[0].length;
        continue;
      }
      if ((m = sticky(FLOAT))) {
        mark(pos, pos + m[0].length, 'float');
        tokens.push({ kind: 'number', text: m[0], start: pos, end: pos + m[0].length });
        pos += m[0].length;
        continue;
      }
      if ((m = sticky(NUMBER))) {
        const cat = m[2] === '' ? 'int' : UNITS.has(m[2]) ? 'duration' : 'bad-number';
        mark(pos, pos + m[0].length, cat);
        tokens.push({ kind: 'number', text: m[0], start: pos, end: pos + m[0].length });
        pos += m[0].length;
        continue;
      }
      if (c === '"') {
        string();
        tokens.push({ kind: 'string', text: '"', start: pos - 1, end: pos });
        continue;
      }
      const op = OPERATORS.find((o) => src.startsWith(o, pos));
      if (op) {
        if (inInterpolation && op === '{') depth++;
        if (inInterpolation && op === '}') {
          if (depth === 0) return; // the caller marks the interpolation's `}`
          depth--;
        }
        mark(pos, pos + op.length, 'operator');
        tokens.push({ kind: 'operator', text: op, start: pos, end: pos + op.length });
        pos += op.length;
        continue;
      }
      mark(pos, pos + 1, 'bad-character');
      pos++;
    }
  }

  function string() {
    mark(pos, pos + 1, 'string');
    pos++;
    while (pos < src.length) {
      if (src[pos] === '"') {
        mark(pos, pos + 1, 'string');
        pos++;
        return;
      }
      if (src[pos] === '\\') {
        const m = sticky(ESCAPE);
        const len = m ? m[0].length : 2;
        mark(pos, pos + len, m ? 'escape' : 'bad-escape');
        pos += len;
        continue;
      }
      if (src.startsWith('${', pos)) {
        mark(pos, pos + 2, 'interpolation');
        pos += 2;
        code(true);
        if (pos < src.length) {
          mark(pos, pos + 1, 'interpolation');
          pos++;
        }
        continue;
      }
      mark(pos, pos + 1, 'string');
      pos++;
    }
  }

  code(false);
  // Names and keywords: a keyword after `.`/`?.` or before `:` is a field or option name.
  tokens.sort((a, b) => a.start - b.start);
  tokens.forEach((t, i) => {
    if (t.kind !== 'keyword' && t.kind !== 'name') return;
    const prev = tokens[i - 1];
    const next = tokens[i + 1];
    const field = (prev && (prev.text === '.' || prev.text === '?.')) || (next && next.text === ':');
    mark(t.start, t.end, t.kind === 'keyword' ? (field ? 'keyword-field' : 'keyword') : 'name');
  });
  return cats;
}

// What each category accepts, tested against the meaningful scopes `m` (innermost last).
const top = (m) => m[m.length - 1] || '';
const has = (m, prefix) => m.some((s) => s.startsWith(prefix));
const EXPECT = {
  doc: [(m) => has(m, 'comment.line.documentation'), 'comment.line.documentation'],
  comment: [(m) => has(m, 'comment.line.double-slash'), 'comment.line.double-slash'],
  string: [
    (m) => m[0] && m[0].startsWith('string.quoted.double') && /^(string\.quoted\.double|punctuation\.definition\.string)/.test(top(m)),
    'string.quoted.double',
  ],
  escape: [(m) => top(m).startsWith('constant.character.escape'), 'constant.character.escape'],
  interpolation: [(m) => top(m).startsWith('punctuation.section.interpolation'), 'punctuation.section.interpolation'],
  int: [(m) => top(m).startsWith('constant.numeric.integer'), 'constant.numeric.integer'],
  float: [(m) => top(m).startsWith('constant.numeric.float'), 'constant.numeric.float'],
  duration: [(m) => has(m, 'constant.numeric.duration') && !has(m, 'string'), 'constant.numeric.duration'],
  keyword: [(m) => /^(keyword|storage|constant\.language)\./.test(top(m)), 'keyword.* / storage.* / constant.language.*'],
  'keyword-field': [(m) => top(m).startsWith('variable.other.property'), 'variable.other.property'],
  name: [(m) => /^(variable|entity\.name|support)\./.test(top(m)) && !has(m, 'string') && !has(m, 'comment'), 'variable.* / entity.name.* / support.*'],
  operator: [(m) => /^(keyword\.operator|punctuation)\./.test(top(m)) && !has(m, 'string'), 'keyword.operator.* / punctuation.*'],
};

// ---------------------------------------------------------------------------------------------
// Sources.

/** `// expect:` codes of a corpus case root; `null` when there is no header. */
function expectedCodes(text) {
  const m = /^\/\/ expect:(.*)$/m.exec(text.split('\n')[0] || '');
  if (!m) return null;
  return m[1].split(',').map((s) => s.trim()).filter((s) => s && s !== 'clean');
}

const parses = (codes) => !codes.some((c) => /^E01\d\d$/.test(c));

function walk(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/** Every source to check: { name, text, line } (`line`: the 1-based line of the text's start). */
function defaultSources() {
  const sources = [];
  const tokenizeOnly = [];
  const rel = (p) => path.relative(ROOT, p).split(path.sep).join('/');
  let skipped = 0;

  const examples = path.join(ROOT, 'examples');
  for (const f of fs.readdirSync(examples).sort()) {
    if (f.endsWith('.flow')) sources.push({ name: rel(path.join(examples, f)), text: read(path.join(examples, f)), line: 1 });
  }

  const corpus = path.join(ROOT, 'tests', 'corpus');
  for (const entry of fs.readdirSync(corpus, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(corpus, entry.name);
    const root = entry.isDirectory() ? path.join(p, 'main.flow') : p;
    if (!root.endsWith('.flow') || !fs.existsSync(root)) continue;
    const codes = expectedCodes(read(root));
    if (codes === null) throw new Error(`${rel(root)}: the first line must be a \`// expect:\` header`);
    const files = entry.isDirectory() ? walk(p).filter((f) => f.endsWith('.flow')) : [p];
    if (!parses(codes)) {
      // Not checked, but still tokenized: the grammar must not throw or stop early on them.
      for (const f of files) tokenizeOnly.push(read(f));
      skipped += files.length;
      continue;
    }
    for (const f of files) sources.push({ name: rel(f), text: read(f), line: 1 });
  }

  const markdown = [path.join(ROOT, 'README.md'), path.join(EXT_DIR, 'README.md')];
  for (const f of fs.readdirSync(path.join(ROOT, 'spec')).sort()) {
    if (f.endsWith('.md')) markdown.push(path.join(ROOT, 'spec', f));
  }
  for (const md of markdown) {
    if (!fs.existsSync(md)) continue;
    const lines = read(md).split('\n');
    for (let i = 0; i < lines.length; i++) {
      const fence = /^```flow(?:,error=([A-Z0-9,]+))?\s*$/.exec(lines[i]);
      if (!fence) continue;
      const start = i;
      let end = i + 1;
      while (end < lines.length && !/^```\s*$/.test(lines[end])) end++;
      const codes = fence[1] ? fence[1].split(',') : [];
      if (parses(codes)) {
        sources.push({ name: rel(md), text: lines.slice(start + 1, end).join('\n'), line: start + 2 });
      } else {
        skipped += 1;
      }
      i = end;
    }
  }
  return { sources, skipped, tokenizeOnly };
}

function read(file) {
  return fs.readFileSync(file, 'utf8');
}

// ---------------------------------------------------------------------------------------------
// Checking.

const MAX_REPORTS = 40;

/** Problems in one source, as messages. */
function check(grammar, source) {
  const { text } = source;
  const scopes = scopesOf(grammar, text);
  const cats = referenceLex(text);
  const problems = [];
  let i = 0;
  while (i < text.length) {
    const ws = /\s/.test(text[i]);
    const m = meaningful(scopes[i] || []);
    let why = null;
    if (!ws && m.length === 0) why = 'no meaningful scope';
    else if (!ws && m.some((s) => s.startsWith('invalid.'))) why = 'an invalid.* scope';
    else if (cats[i] !== 'ws' && !EXPECT[cats[i]]) why = `the reference lexer found a ${cats[i]}`;
    else if (cats[i] !== 'ws' && !EXPECT[cats[i]][0](m)) why = `a ${cats[i]} needs ${EXPECT[cats[i]][1]}`;
    if (!why) {
      i++;
      continue;
    }
    // Group the run of characters with the same problem and scopes.
    let j = i + 1;
    const key = JSON.stringify(scopes[i]) + cats[i];
    while (j < text.length && text[j] !== '\n' && JSON.stringify(scopes[j]) + cats[j] === key) j++;
    const before = text.slice(0, i);
    const line = source.line + (before.match(/\n/g) || []).length;
    const col = i - before.lastIndexOf('\n');
    problems.push(
      `${source.name}:${line}:${col}: \`${text.slice(i, j)}\`: ${why}; the grammar gives [${(scopes[i] || []).join(', ')}]`,
    );
    i = j;
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Targeted assertions: snippet, the text to look at (its `nth` occurrence), and a pattern every
// character of it must have among its scopes (or, with `not`, must not have).

const ASSERTIONS = [
  // Strings and interpolation.
  { src: 'let p = "Release ${s.container}?"', at: '${', want: /^punctuation\.section\.interpolation\.begin/ },
  { src: 'let p = "Release ${s.container}?"', at: 's.container', want: /^meta\.embedded\.interpolation/ },
  { src: 'let p = "Release ${s.container}?"', at: 'container', want: /^variable\.other\.property/ },
  { src: 'let p = "Release ${s.container}?"', at: 'container', not: /^string\./, innermost: true },
  { src: 'let p = "Release ${s.container}?"', at: '}', want: /^punctuation\.section\.interpolation\.end/ },
  { src: 'let p = "Release ${s.container}?"', at: '?', want: /^string\.quoted\.double/ },
  { src: 'let p = "Release ${s.container}?"', at: 'Release', want: /^string\.quoted\.double/ },
  { src: '"total: ${to_string({ n: 1 })} left"', at: ' left', want: /^string\.quoted\.double/, innermost: true },
  { src: '"total: ${to_string({ n: 1 })} left"', at: 'to_string', want: /^support\.function\.builtin/ },
  { src: '"a ${"b ${c} d"} e"', at: 'c', want: /^variable\.other\.readwrite/ },
  { src: '"a ${"b ${c} d"} e"', at: ' d', want: /^string\.quoted\.double/, innermost: true },
  { src: '"a ${"b ${c} d"} e"', at: ' e', want: /^string\.quoted\.double/, innermost: true },
  { src: '"say \\"hi\\" \\$${x} \\u{e9}\\n"', at: '\\"', want: /^constant\.character\.escape/ },
  { src: '"say \\"hi\\" \\$${x} \\u{e9}\\n"', at: 'hi', want: /^string\.quoted\.double/, innermost: true },
  { src: '"say \\"hi\\" \\$${x} \\u{e9}\\n"', at: '\\$', want: /^constant\.character\.escape/ },
  { src: '"say \\"hi\\" \\$${x} \\u{e9}\\n"', at: 'x', want: /^meta\.embedded\.interpolation/ },
  { src: '"say \\"hi\\" \\$${x} \\u{e9}\\n"', at: '\\u{e9}', want: /^constant\.character\.escape/ },
  { src: '"say \\"hi\\" \\$${x} \\u{e9}\\n"', at: '\\n', want: /^constant\.character\.escape/ },
  { src: 'let price = "$5 for ${n}"', at: '$5', want: /^string\.quoted\.double/, innermost: true },
  { src: 'let path = "C:\\temp\\data"', at: '\\d', want: /^invalid\.illegal\.escape/ },
  { src: 'let s = "two\nlines ${x}"\nlet y = 1', at: 'lines', want: /^string\.quoted\.double/, innermost: true },
  { src: 'let s = "two\nlines ${x}"\nlet y = 1', at: 'y', want: /^variable\.other\.declaration/ },
  // Numbers and durations.
  { src: 'timeout: 48h,', at: '48h', want: /^constant\.numeric\.duration/ },
  { src: 'retry 3 backoff 500ms { f() }', at: '500ms', want: /^constant\.numeric\.duration/ },
  { src: 'retry 3 backoff 500ms { f() }', at: '3', want: /^constant\.numeric\.integer/ },
  { src: 'sleep 2d', at: '2d', want: /^constant\.numeric\.duration/ },
  { src: 'let x = 1_000.25 + 1_000', at: '1_000.25', want: /^constant\.numeric\.float/ },
  { src: 'let x = 1_000.25 + 1_000', at: '1_000', nth: 2, want: /^constant\.numeric\.integer/ },
  { src: 'sleep 2days', at: '2days', want: /^invalid\.illegal\.numeric/ },
  { src: 'let price = 10€', at: '€', want: /^invalid\.illegal\.character/ },
  // Durable constructs.
  { src: 'let d = await approval "release_signoff" {', at: 'await', want: /^keyword\.control\.await/ },
  { src: 'let d = await approval "release_signoff" {', at: 'approval', want: /^keyword\./ },
  { src: 'let d = await approval "release_signoff" {', at: 'release_signoff', want: /^string\.quoted\.double/ },
  { src: 'let r = await input<Review> "review" { from: role("support") }', at: 'await', want: /^keyword\.control\.await/ },
  { src: 'let r = await input<Review> "review" { from: role("support") }', at: 'input', want: /^keyword\./ },
  { src: 'let r = await input<Review> "review" { from: role("support") }', at: 'Review', want: /^entity\.name\.type/ },
  { src: 'let r = await input<Review> "review" { from: role("support") }', at: '<', want: /^punctuation\.definition\.typeparameters/ },
  { src: 'let r = await input<Review> "review" { from: role("support") }', at: 'from', want: /^variable\.other\.property/ },
  { src: 'escalate: role("ops_manager") after 24h,', at: 'after', want: /^keyword\./ },
  { src: 'escalate: role("ops_manager") after 24h,', at: 'role', want: /^support\.function\.builtin/ },
  { src: 'let r = retry 3 backoff 2s on ToolError, Timeout { f() }', at: 'retry', want: /^keyword\./ },
  { src: 'let r = retry 3 backoff 2s on ToolError, Timeout { f() }', at: 'on', want: /^keyword\./ },
  { src: 'let r = retry 3 backoff 2s on ToolError, Timeout { f() }', at: 'Timeout', want: /^support\.constant\.error-kind/ },
  { src: 'audit "released" { receipt: r.id, by: d.by }', at: 'audit', want: /^keyword\./ },
  { src: 'try { f() } catch e { fail "no: ${e.message}" }', at: 'catch', want: /^keyword\.control/ },
  { src: 'try { f() } catch e { fail "no: ${e.message}" }', at: 'e', want: /^variable\.other\.declaration/ },
  // Keywords as field and option names.
  { src: '"${d.type} ${g.by}"', at: 'type', want: /^variable\.other\.property/ },
  { src: '"${d.type} ${g.by}"', at: 'type', not: /^(keyword|storage)\./ },
  { src: 'type Doc = { type: String, input: String? }', at: 'type', want: /^storage\.type/ },
  { src: 'type Doc = { type: String, input: String? }', at: 'Doc', want: /^entity\.name\.type/ },
  { src: 'type Doc = { type: String, input: String? }', at: 'type', nth: 2, want: /^variable\.other\.property/ },
  { src: 'type Doc = { type: String, input: String? }', at: 'input', want: /^variable\.other\.property/ },
  { src: 'type Doc = { type: String, input: String? }', at: 'String', want: /^support\.type\.builtin/ },
  { src: 'let g = await approval "check" { approvers: role("ops"), timeout: 1h }', at: 'timeout', want: /^variable\.other\.property/ },
  { src: 'let t = timeout 5s { f() }', at: 'timeout', want: /^keyword\./ },
  // Declarations.
  { src: 'tool release(container: String) -> Receipt via exec "tools/release.sh" sensitive', at: 'tool', want: /^storage\.type\.tool/ },
  { src: 'tool release(container: String) -> Receipt via exec "tools/release.sh" sensitive', at: 'release', want: /^entity\.name\.function/ },
  { src: 'tool release(container: String) -> Receipt via exec "tools/release.sh" sensitive', at: 'container', want: /^variable\.parameter/ },
  { src: 'tool release(container: String) -> Receipt via exec "tools/release.sh" sensitive', at: 'via', want: /^keyword\.other\.via/ },
  { src: 'tool release(container: String) -> Receipt via exec "tools/release.sh" sensitive', at: 'exec', want: /^support\.function\.binding/ },
  { src: 'tool release(container: String) -> Receipt via exec "tools/release.sh" sensitive', at: 'sensitive', want: /^storage\.modifier\.sensitive/ },
  { src: 'tool release(container: String) -> Receipt via exec "tools/release.sh" sensitive', at: '->', want: /^keyword\.operator\.arrow/ },
  { src: 'tool check(docs: List<Doc>) -> DocReport via http post "/check"', at: 'http', want: /^support\.function\.binding/ },
  { src: 'tool check(docs: List<Doc>) -> DocReport via http post "/check"', at: 'post', want: /^support\.constant\.http-method/ },
  { src: 'tool check(docs: List<Doc>) -> DocReport via http post "/check"', at: 'List', want: /^support\.type\.builtin/ },
  { src: 'tool check(docs: List<Doc>) -> DocReport via http post "/check"', at: 'Doc', want: /^entity\.name\.type/ },
  { src: 'tool extract(doc: Doc) -> Invoice via llm "mistral-small" prompt "Extract the fields"', at: 'llm', want: /^support\.function\.binding/ },
  { src: 'tool extract(doc: Doc) -> Invoice via llm "mistral-small" prompt "Extract the fields"', at: 'prompt', want: /^support\.function\.binding/ },
  { src: 'workflow cargo_release(s: Shipment) -> Verdict {', at: 'workflow', want: /^storage\.type\.workflow/ },
  { src: 'workflow cargo_release(s: Shipment) -> Verdict {', at: 'cargo_release', want: /^entity\.name\.function/ },
  { src: 'workflow cargo_release(s: Shipment) -> Verdict {', at: 's', nth: 2, want: /^variable\.parameter/ },
  { src: 'enum Verdict { Released(receipt: String), Held(reason: String) }', at: 'enum', want: /^storage\.type\.enum/ },
  { src: 'enum Verdict { Released(receipt: String), Held(reason: String) }', at: 'Held', want: /^variable\.other\.enummember/ },
  { src: 'enum Verdict { Released(receipt: String), Held(reason: String) }', at: 'reason', want: /^variable\.other\.property/ },
  { src: 'let m: Map<List<Int>>? = none', at: '>>', want: /^punctuation\.definition\.typeparameters\.end/ },
  { src: 'let m: Map<List<Int>>? = none', at: 'none', want: /^constant\.language\.none/ },
  { src: 'import "types.flow"', at: 'import', want: /^keyword\.control\.import/ },
  { src: 'fn pow2(n: Int) -> Int {', at: 'fn', want: /^support\.function\.fn/ },
  { src: 'fn pow2(n: Int) -> Int {', at: 'pow2', want: /^entity\.name\.function/ },
  // Refined types.
  { src: 'type Score = Float in 0.0..1.0', at: 'Score', want: /^entity\.name\.type/ },
  { src: 'type Score = Float in 0.0..1.0', at: 'in', want: /^keyword\.other\.refinement\.in/ },
  { src: 'type Score = Float in 0.0..1.0', at: '..', want: /^keyword\.operator\.range/ },
  { src: 'type Score = Float in 0.0..1.0', at: '1.0', want: /^constant\.numeric\.float/ },
  { src: 'type Sku = String matching "^[A-Z]{2}[0-9]+$"', at: 'matching', want: /^support\.function\.refinement\.matching/ },
  { src: 'type Sku = String matching "^[A-Z]{2}[0-9]+$"', at: '[A-Z]', want: /^string\.quoted\.double/ },
  { src: 'type Order = { notes: List<String> nonempty, title: String length 1..80 }', at: 'nonempty', want: /^support\.function\.refinement\.nonempty/ },
  { src: 'type Order = { notes: List<String> nonempty, title: String length 1..80 }', at: 'length', want: /^support\.function\.refinement\.length/ },
  { src: 'type Order = { notes: List<String> nonempty, title: String length 1..80 }', at: 'title', want: /^variable\.other\.property/ },
  { src: 'workflow w(qty: Int in -5..10) -> Int {', at: 'in', want: /^keyword\.other\.refinement\.in/ },
  { src: 'workflow w(qty: Int in -5..10) -> Int {', at: '-', want: /^keyword\.operator\.arithmetic/ },
  { src: 'let n = length(text)', at: 'length', want: /^support\.function\.builtin/ },
  // Comments and operators.
  { src: '/// The terminal\'s `receipt` number.\nid: String, // a plain comment', at: '///', want: /^comment\.line\.documentation/ },
  { src: '/// The terminal\'s `receipt` number.\nid: String, // a plain comment', at: 'number.', want: /^comment\.line\.documentation/ },
  { src: '/// The terminal\'s `receipt` number.\nid: String, // a plain comment', at: 'a plain comment', want: /^comment\.line\.double-slash/ },
  { src: 'let n = a?.b ?? 0', at: '?.', want: /^punctuation\.accessor/ },
  { src: 'let n = a?.b ?? 0', at: '??', want: /^keyword\.operator\.null-coalescing/ },
  { src: 'if !d.approved && x >= 2 || y != 3 { return Held(d.comment) }', at: '!', want: /^keyword\.operator\.logical/ },
  { src: 'if !d.approved && x >= 2 || y != 3 { return Held(d.comment) }', at: '>=', want: /^keyword\.operator\.comparison/ },
  { src: 'if !d.approved && x >= 2 || y != 3 { return Held(d.comment) }', at: 'Held', want: /^entity\.name\.type/ },
  { src: 'match v { Low => 1, Risk.High(_) => 2 }', at: '=>', want: /^keyword\.operator\.arrow/ },
  { src: 'match v { Low => 1, Risk.High(_) => 2 }', at: 'High', want: /^variable\.other\.enummember/ },
  { src: 'match v { Low => 1, Risk.High(_) => 2 }', at: '_', want: /^variable\.language\.wildcard/ },
  { src: 'let größe = 出荷(x)', at: 'größe', want: /^variable\.other\.declaration/ },
  { src: 'let größe = 出荷(x)', at: '出荷', want: /^entity\.name\.function\.call/ },
];

function runAssertions(grammar) {
  const failures = [];
  for (const a of ASSERTIONS) {
    const scopes = scopesOf(grammar, a.src);
    let at = -1;
    for (let n = 0; n < (a.nth || 1); n++) at = a.src.indexOf(a.at, at + 1);
    if (at < 0) {
      failures.push(`assertion: \`${a.at}\` does not occur in \`${a.src}\``);
      continue;
    }
    for (let i = at; i < at + a.at.length; i++) {
      const all = scopes[i] || [];
      const pool = a.innermost ? [meaningful(all)[meaningful(all).length - 1] || ''] : all;
      const ok = (a.want ? pool.some((s) => a.want.test(s)) : true) && (a.not ? !meaningful(all).some((s) => a.not.test(s)) : true);
      if (!ok) {
        failures.push(
          `assertion: in \`${a.src.replace(/\n/g, '\\n')}\`, \`${a.at}\` should ${a.want ? `have ${a.want}` : ''}${a.want && a.not ? ' and ' : ''}${a.not ? `not have ${a.not}` : ''}${a.innermost ? ' (innermost)' : ''}; \`${a.src[i]}\` has [${all.join(', ')}]`,
        );
        break;
      }
    }
  }
  return failures;
}

// ---------------------------------------------------------------------------------------------
// The manifest: what package.json points at exists and agrees with the grammar.

function checkManifest() {
  const failures = [];
  const pkg = JSON.parse(read(path.join(EXT_DIR, 'package.json')));
  const expect = (ok, what) => {
    if (!ok) failures.push(`package.json: ${what}`);
  };
  const languages = (pkg.contributes && pkg.contributes.languages) || [];
  const grammars = (pkg.contributes && pkg.contributes.grammars) || [];
  const flow = languages.find((l) => l.id === 'flow');
  expect(flow && (flow.extensions || []).includes('.flow'), 'the language `flow` must claim `.flow` files');
  expect(flow && flow.configuration && fs.existsSync(path.join(EXT_DIR, flow.configuration)), 'the language configuration file must exist');
  if (flow && flow.configuration && fs.existsSync(path.join(EXT_DIR, flow.configuration))) {
    const config = JSON.parse(read(path.join(EXT_DIR, flow.configuration)));
    expect(config.comments && config.comments.lineComment === '//', 'the line comment must be `//`');
    expect((config.autoClosingPairs || []).some((p) => p.open === '"'), 'quotes must auto-close');
  }
  const g = grammars.find((x) => x.language === 'flow');
  expect(g && g.scopeName === 'source.flow', 'the grammar must be contributed for `flow` as `source.flow`');
  expect(g && path.resolve(EXT_DIR, g.path) === GRAMMAR, 'the grammar path must be syntaxes/flow.tmLanguage.json');
  expect(JSON.parse(read(GRAMMAR)).scopeName === 'source.flow', 'the grammar file must declare scopeName source.flow');
  expect((pkg.activationEvents || []).includes('onLanguage:flow'), 'the extension must activate on the `flow` language');
  expect(pkg.main && fs.existsSync(path.join(EXT_DIR, pkg.main)), '`main` must exist');
  const settings = (pkg.contributes.configuration && pkg.contributes.configuration.properties) || {};
  expect(settings['flow.server.path'] && settings['flow.server.path'].default === 'flow-lsp', 'the setting `flow.server.path` must default to `flow-lsp`');
  expect(pkg.dependencies && pkg.dependencies['vscode-languageclient'], 'vscode-languageclient must be a dependency');
  if (pkg.main && fs.existsSync(path.join(EXT_DIR, pkg.main))) {
    const main = read(path.join(EXT_DIR, pkg.main));
    expect(main.includes("'flow.server.path'") || main.includes("'server.path'"), '`main` must read flow.server.path');
    try {
      new Function('require', 'module', 'exports', main); // syntax only: `vscode` exists only inside VS Code
    } catch (err) {
      failures.push(`${pkg.main}: ${err.message}`);
    }
  }
  return failures;
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const grammar = await loadGrammar();
  const args = process.argv.slice(2);
  const { sources, skipped, tokenizeOnly } = args.length
    ? { sources: args.map((f) => ({ name: f, text: read(f), line: 1 })), skipped: 0, tokenizeOnly: [] }
    : defaultSources();
  for (const text of tokenizeOnly) scopesOf(grammar, text);

  const problems = [];
  let lines = 0;
  for (const source of sources) {
    lines += source.text.split('\n').length;
    problems.push(...check(grammar, source));
  }
  const failures = args.length ? [] : [...checkManifest(), ...runAssertions(grammar)];

  for (const p of problems.slice(0, MAX_REPORTS)) console.error(p);
  if (problems.length > MAX_REPORTS) console.error(`… and ${problems.length - MAX_REPORTS} more`);
  for (const f of failures) console.error(f);

  const summary =
    `${sources.length} sources (${lines} lines) tokenized` +
    (skipped ? `, ${skipped} that do not parse (E01xx) tokenized but not checked` : '') +
    (args.length ? '' : `; ${ASSERTIONS.length} targeted assertions`);
  if (problems.length || failures.length) {
    console.error(`FAILED: ${problems.length} untokenized or mis-scoped spans, ${failures.length} failed assertions; ${summary}`);
    process.exit(1);
  }
  console.log(`ok: ${summary}`);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
