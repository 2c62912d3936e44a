// The shipped TypeScript declarations compile, and so does code using them.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';

const here = path.dirname(fileURLToPath(import.meta.url));

it('switchboard.d.ts type-checks an example under strict', { timeout: 60_000 }, () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const args = ['--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext'];
  args.push('--lib', 'es2022,dom', path.join(here, 'types.ts'));
  try {
    execFileSync(process.execPath, [tsc, ...args], { encoding: 'utf8', stdio: 'pipe' });
  } catch (e) {
    assert.fail(`tsc:\n${e.stdout}${e.stderr}`);
  }
});
