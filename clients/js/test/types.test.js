// The TypeScript declarations compile against a program that uses the whole
// documented surface (and reject misuse, through @ts-expect-error lines).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { devDependencyPath } from "./harness.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("the typings compile (tsc --noEmit)", () => {
  const tsc = path.join(path.dirname(devDependencyPath("typescript/package.json")), "bin", "tsc");
  const run = spawnSync(process.execPath, [tsc, "--noEmit", "-p", root], { encoding: "utf8", timeout: 120_000 });
  assert.equal(run.status, 0, `tsc failed:\n${run.stdout}${run.stderr}`);
});
