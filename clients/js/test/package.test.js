// What `npm install wshub-client` would get: the modules, the declarations
// and the README, nothing else, and no runtime dependency.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("the published package holds the modules, their types and the README, with no dependency", () => {
  const manifest = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
  assert.equal(manifest.name, "wshub-client");
  assert.equal(manifest.type, "module");
  assert.deepEqual(manifest.dependencies ?? {}, {}, "no runtime dependency");
  assert.equal(manifest.exports["."].default, "./src/index.js");
  assert.equal(manifest.exports["."].types, "./src/index.d.ts");

  const pack = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
    cwd: root,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(pack.status, 0, pack.stderr);
  const [packed] = JSON.parse(pack.stdout);
  const files = packed.files.map((file) => file.path).sort();
  for (const needed of ["README.md", "package.json", "src/index.js", "src/index.d.ts", "src/client.js"]) {
    assert.ok(files.includes(needed), `${needed} in ${files}`);
  }
  assert.ok(!files.some((file) => file.startsWith("test/")), `no tests shipped: ${files}`);
  // Every module index.js reaches is shipped.
  for (const file of files.filter((f) => f.endsWith(".js"))) {
    const source = readFileSync(path.join(root, file), "utf8");
    for (const [, imported] of source.matchAll(/from "\.\/([^"]+)"/g)) {
      assert.ok(files.includes(`src/${imported}`), `${file} imports ${imported}, which is not shipped`);
    }
  }
});
