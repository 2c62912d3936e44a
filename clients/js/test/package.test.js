// The package as `npm pack` makes it: the module, its types, the README and
// the license; and the README's examples type-check against the types.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');

it('npm pack ships the module, its types, the README and the license', { timeout: 60_000 }, () => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
  const [pack] = JSON.parse(out);
  const files = pack.files.map((f) => f.path).sort();
  assert.deepEqual(files, ['LICENSE', 'README.md', 'package.json', 'switchboard.d.ts', 'switchboard.js']);
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.equal(pkg.license, 'Apache-2.0');
  const license = readFileSync(path.join(root, 'LICENSE'), 'utf8');
  assert.match(license, /Apache License\s+Version 2\.0/);
  assert.equal(license, readFileSync(path.join(root, '../../LICENSE'), 'utf8'), 'the same LICENSE as the repository');
});

it("the README's examples type-check under strict", { timeout: 60_000 }, () => {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  for (const part of ['## Install', '## Connect', '## Rooms', '## Presence', '## Chat signals', '## Resume']) {
    assert.ok(readme.includes(part), `README has no "${part}"`);
  }
  const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.ok(blocks.length >= 4, 'examples');
  // One module per block, against the package as installed.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'switchboard-readme-'));
  try {
    const modules = path.join(dir, 'node_modules');
    execFileSync('mkdir', ['-p', modules]);
    symlinkSync(root, path.join(modules, 'switchboard-client'));
    const prelude = [
      "import { connect } from 'switchboard-client';",
      "declare const client: ReturnType<typeof connect>;",
      'declare function showTyping(users: string[]): void;',
    ].join('\n');
    const files = blocks
      .filter((b) => b.includes('client.') || b.includes('connect('))
      .map((b, i) => {
        const body = b.includes("from 'switchboard-client'") ? b : `${prelude}\n${b}`;
        const file = path.join(dir, `example${i}.ts`);
        writeFileSync(file, `${body}\nexport {};\n`);
        return file;
      });
    writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const args = ['--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext'];
    args.push('--lib', 'es2022,dom', '--preserveSymlinks', ...files);
    try {
      execFileSync(process.execPath, [tsc, ...args], { cwd: dir, encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      assert.fail(`tsc on the README's examples:\n${e.stdout}${e.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
