// The committed build of the page (web/dist, which the server embeds) is what web/build.sh makes
// from the sources now.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { root } from "./support.mjs";

test("web/dist is what web/build.sh builds from the sources", () => {
  const fresh = mkdtempSync(join(tmpdir(), "grpc-chat-web-"));
  try {
    execFileSync("sh", [join(root, "web/build.sh")], { env: { ...process.env, dist: fresh }, stdio: "inherit" });
    const committed = join(root, "web/dist");
    assert.deepEqual(readdirSync(committed).sort(), readdirSync(fresh).sort());
    for (const name of readdirSync(fresh)) {
      const same = readFileSync(join(fresh, name)).equals(readFileSync(join(committed, name)));
      assert.ok(same, `web/dist/${name} differs from a fresh build: run make web and commit it`);
    }
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
});
